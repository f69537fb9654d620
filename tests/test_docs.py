"""Every Python example of the manual (docs/**/*.rst) and of README.rst runs, as written.

Each ``.. code-block:: python`` is one test, run in a fresh namespace with a
temporary folder as the current one. What a block needs is said on its first
line and provided here:

- ``# needs: s3``: ``AWS_ENDPOINT_URL_S3`` (and test credentials, region
  us-east-1) point boto3 at the session's moto server, where the bucket
  ``my-bucket`` exists and is empty;
- ``# needs: redis``: ``redis://127.0.0.1:6379/0`` in the block is replaced
  by the session's redis-server;
- absolute example paths (``/var/...``, ``/tmp/...``, ``/data/...``) are moved
  below the test's temporary folder, so ``FileSystemJsonBackend("/var/data")``
  writes there;
- ``# not run: <why>``: a block that is deliberately not run (a fragment, a
  program needing a package the project does not install); there are few,
  and each says why.

``console`` and ``text`` blocks and ``::`` literal blocks are not Python and
are not run. ``sphinx-build -W`` is not run here: ``.ci/run`` builds the
manual after the tests.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.rst", *sorted((ROOT / "docs").rglob("*.rst"))]
DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block:: python\s*$")
NEEDS = re.compile(r"^# needs: (?P<what>[a-z0-9, ]+)$")
NOT_RUN = re.compile(r"^# not run: \S")
KNOWN_NEEDS = {"s3", "redis"}
EXAMPLE_REDIS = "redis://127.0.0.1:6379/0"
EXAMPLE_PATH = re.compile(r"(?<![\w.~])/(?P<top>var|tmp|data)/")
BUCKET = "my-bucket"


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def first(self) -> str:
        return self.code.lstrip().splitlines()[0] if self.code.strip() else ""

    @property
    def needs(self) -> set[str]:
        found = NEEDS.match(self.first)
        if found:
            return {part.strip() for part in found.group("what").split(",")}
        # README.rst's examples carry no marks (its readers copy them): an S3 backend built
        # without an endpoint of its own talks to the session's moto server.
        if (
            self.path.name == "README.rst"
            and "S3JsonBackend(" in self.code
            and "endpoint_url" not in self.code
        ):
            return {"s3"}
        return set()


def examples_in(path: Path) -> list[Example]:
    """The ``.. code-block:: python`` blocks of one file: options skipped, body dedented."""
    if "_build" in path.parts or "_generated" in path.parts:
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for number, line in enumerate(lines):
        match = DIRECTIVE.match(line)
        if not match:
            continue
        indent = len(match.group("indent"))
        body: list[str] = []
        start = None
        for index in range(number + 1, len(lines)):
            text = lines[index]
            if text.strip() and len(text) - len(text.lstrip()) <= indent:
                break
            if start is None and re.match(r"^\s+:[\w-]+:", text):
                continue  # a directive option
            if start is None and text.strip():
                start = index + 1
            if start is not None:
                body.append(text)
        found.append(Example(path, start or number + 1, textwrap.dedent("\n".join(body)).strip() + "\n"))
    return found


EXAMPLES = [example for source in SOURCES for example in examples_in(source)]


def _not_run(example: Example) -> bool:
    return bool(NOT_RUN.match(example.first))


RUN = [example for example in EXAMPLES if not _not_run(example)]


def test_the_examples_are_found() -> None:
    # The collector itself: README's examples and the manual's pages all found, every need known.
    names = {example.name.split(":")[0] for example in EXAMPLES}
    assert "README.rst" in names and "docs/tutorial/first-backend.rst" in names
    assert len(EXAMPLES) >= 20  # 22 in the manual, and README.rst's
    assert all(example.needs <= KNOWN_NEEDS for example in EXAMPLES), [e.name for e in EXAMPLES]


def test_few_examples_are_not_run_and_each_says_why() -> None:
    skipped = [example.name for example in EXAMPLES if NOT_RUN.match(example.first)]
    assert len(skipped) <= 3, skipped


def test_the_collector_reads_options_and_indentation(tmp_path: Path) -> None:
    page = tmp_path / "page.rst"
    page.write_text(
        "Title\n=====\n\n- a list item:\n\n  .. code-block:: python\n     :caption: x\n\n"
        "     # needs: redis\n     x = 1\n\n     y = 2\n\n  back in the item\n"
    )
    (example,) = examples_in(page)
    assert example.code == "# needs: redis\nx = 1\n\ny = 2\n"
    assert example.needs == {"redis"} and example.line == 9


def test_example_paths_move_below_the_test_folder() -> None:
    code = 'A("/var/data"); open_url("sqlite:///data/kv.db"); B("/tmp/c"); C("app/var/x"); D("~/tmp/x")'
    moved = EXAMPLE_PATH.sub(lambda m: f"/T/{m.group('top')}/", code)
    assert (
        moved
        == 'A("/T/var/data"); open_url("sqlite:///T/data/kv.db"); B("/T/tmp/c"); C("app/var/x"); D("~/tmp/x")'
    )


def _empty_bucket(client: Any) -> None:
    try:
        client.create_bucket(Bucket=BUCKET)
    except client.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


@pytest.mark.parametrize("example", RUN, ids=lambda example: example.name)
def test_the_example_runs(
    example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    code = EXAMPLE_PATH.sub(lambda m: f"{tmp_path}/{m.group('top')}/", example.code)
    monkeypatch.chdir(tmp_path)
    if "s3" in example.needs:
        from servers import s3_client

        endpoint = request.getfixturevalue("moto_endpoint")
        _empty_bucket(s3_client(endpoint))
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.delenv("AWS_PROFILE", raising=False)
    if "redis" in example.needs:
        assert EXAMPLE_REDIS in code, f"{example.name} needs redis but names no {EXAMPLE_REDIS}"
        code = code.replace(EXAMPLE_REDIS, request.getfixturevalue("redis_url"))
    exec(compile(code, example.name, "exec"), {"__name__": "__docs__"})


def test_every_public_name_has_its_reference_entry() -> None:
    # docs/reference/ documents each name of backends.__all__ by hand-placed autodoc directives
    # (grouped by area): a name added to __all__ needs its line there, or the reference lacks it.
    import backends

    text = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "docs" / "reference").glob("*.rst"))
    entry = re.compile(r"^\.\. auto(?:class|function|data|exception):: backends\.(\w+)\s*$", re.M)
    documented = set(entry.findall(text))
    assert set(backends.__all__) - documented == set()
