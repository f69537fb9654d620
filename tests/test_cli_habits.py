"""The command as aws-cli users expect it: trees, big files, options anywhere, messages with a way out."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path

import pytest
from servers import S3Target
from test_cli import env, fails, ok, run

import backends
from backends.cli.cp import copy_all

README = Path(__file__).resolve().parent.parent / "README.rst"


@pytest.fixture
def bucket(moto_server: S3Target) -> Iterator[str]:
    """A fresh prefix of the moto server's bucket, as an s3:// URL without the endpoint."""
    prefix = f"habits-{os.urandom(4).hex()}"
    yield f"s3://{moto_server.bucket}/{prefix}"
    backends.S3RawBackend(moto_server.bucket, prefix=prefix, client=moto_server.client).clear()


def site(root: Path) -> Path:
    """A website's build, as another tool made it: a tree of ordinary files."""
    files = {
        "index.html": b"<h1>hi</h1>",
        "css/site.css": b"body{}",
        "img/logo.png": os.urandom(3000),
        "img/icons/a.png": os.urandom(100),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def tree_of(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and not path.name.startswith("~")
    }


# -- 1. ordinary folder trees ------------------------------------------------------------------


def test_cp_uploads_a_whole_tree_and_brings_it_back_the_same(
    tmp_path: Path, bucket: str, moto_server: S3Target
) -> None:
    source = site(tmp_path / "site")
    endpoint = ["--endpoint-url", str(moto_server.endpoint_url)]
    out = ok("cp", f"{source}?format=raw", f"{bucket}/site?format=raw", *endpoint)
    # was: "copied 2", and the files in sub-folders left behind
    assert out.startswith("copied 4, skipped 0 already identical, 4 keys (")
    listed = ok("ls", f"{bucket}/site?format=raw", *endpoint).split()
    assert listed == ["css/site.css", "img/icons/a.png", "img/logo.png", "index.html"]  # sorted
    ok("cp", f"{bucket}/site?format=raw", f"{tmp_path / 'back'}?format=raw", *endpoint)
    assert tree_of(tmp_path / "back") == tree_of(source)  # the same tree, file for file
    assert ok("ls", str(tmp_path / "back")).split() == listed


def test_what_cannot_be_copied_is_reported_and_fails_the_command(tmp_path: Path, bucket: str) -> None:
    source = site(tmp_path / "site")
    (source / "img" / "current").symlink_to(source / "img" / "logo.png")
    (source / "~draft.html").write_bytes(b"")
    done = run("ls", str(source))  # each stray named, counted, and the exit status says so
    assert done.returncode == 1 and "not a key: img/current: a symlink" in done.stderr.decode()
    assert "backends ls: 2 not listed, not keys (named above)" in done.stderr.decode()
    done = run("cp", f"{source}?format=raw", f"{tmp_path / 'copy'}?format=raw")
    errors = done.stderr.decode()
    assert done.returncode == 1 and "2 not copied" in errors
    assert "~draft.html" in errors and "img/current" in errors
    assert sorted(tree_of(tmp_path / "copy")) == sorted(tree_of(source))  # the rest was copied


def test_keys_a_tree_cannot_hold_are_reported_with_the_way_out(tmp_path: Path) -> None:
    escaped = backends.FileSystemJsonBackend(tmp_path / "escaped")
    escaped.dump_many({"a": 1, "a/b": 2, "c": 3})
    target = backends.FileSystemJsonBackend(tmp_path / "plain", layout="plain")
    target["x"] = 0  # not empty: it keeps its plain layout
    done = run("cp", str(tmp_path / "escaped"), str(tmp_path / "plain"))
    errors = done.stderr.decode()
    assert done.returncode == 1 and "the target cannot hold" in errors and "?layout=escaped" in errors
    assert {"c", "x"} <= set(target) and len(set(target) & {"a", "a/b"}) == 1
    ok("cp", str(tmp_path / "escaped"), str(tmp_path / "kept"))  # a new folder takes the source's layout
    assert dict(backends.FileSystemJsonBackend(tmp_path / "kept").items()) == dict(escaped.items())


# -- 2. big files, streamed, and what a second run skips -------------------------------------------


def _peak_rss(*args: str) -> int:
    """The peak RSS (KiB) of one run of the command, in its own process."""
    code = (
        "import resource, sys\nfrom backends.cli import main\nstatus = main(sys.argv[1:])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, env=env(), timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return int(done.stderr.decode().split()[-1])


def test_cp_streams_big_raw_files_in_flat_memory(tmp_path: Path) -> None:
    size = 96 * 1024 * 1024
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    with open(tmp_path / "big" / "video.mp4", "wb") as out:
        for _ in range(size // (1 << 20)):
            out.write(os.urandom(1 << 20))
    (tmp_path / "small" / "video.mp4").write_bytes(b"x")
    small = _peak_rss("cp", "-q", f"{tmp_path / 'small'}?format=raw", f"{tmp_path / 'copy1'}?format=raw")
    big = _peak_rss("cp", "-q", f"{tmp_path / 'big'}?format=raw", f"{tmp_path / 'copy2'}?format=raw")
    assert (tmp_path / "copy2" / "video.mp4").stat().st_size == size
    assert big - small < size // 1024 // 4, (small, big)  # a quarter of the file at most: it was streamed


def test_a_second_copy_reads_no_value_and_writes_nothing(tmp_path: Path, moto_server: S3Target) -> None:
    source = site(tmp_path / "site")
    prefix = f"again-{os.urandom(4).hex()}"
    target = backends.S3RawBackend(moto_server.bucket, prefix=prefix, client=moto_server.new_client())
    requests: Counter[str] = Counter()
    target.client.meta.events.register(
        "before-send.s3", lambda event_name, **_: requests.update([event_name.rsplit(".", 1)[-1]])
    )
    local = backends.FileSystemRawBackend(source)
    seen: list[tuple[int, int]] = []
    first = copy_all(local, target, progress=lambda keys, size: seen.append((keys, size)))
    assert (first.copied, first.bytes) == (4, sum(len(data) for data in tree_of(source).values()))
    assert seen[-1] == (4, first.bytes)  # the progress counts bytes
    requests.clear()
    again = copy_all(local, target)
    assert (again.copied, again.skipped) == (0, 4)
    # One LIST, plus one HEAD for the gzipped .html and .css (a LIST tells only their gzipped
    # size); no GET, no PUT: sizes and MD5s (S3's ETag, the local file's digest) decide.
    assert requests == Counter({"ListObjectsV2": 1, "HeadObject": 2}), requests
    (source / "img" / "logo.png").write_bytes(os.urandom(3000))  # same size, new content
    assert copy_all(local, target).copied == 1
    target.clear()


# -- 3. aws-cli habits --------------------------------------------------------------------------


def test_s3_options_and_json_go_before_or_after_the_subcommand(bucket: str, moto_server: S3Target) -> None:
    endpoint = str(moto_server.endpoint_url)
    ok("put", bucket, "k", "1", "--endpoint-url", endpoint, "--region", "us-east-1")
    assert json.loads(ok("--json", "ls", bucket, "--endpoint-url", endpoint)) == ["k"]
    assert json.loads(ok("--endpoint-url", endpoint, "ls", bucket, "--json")) == ["k"]
    assert json.loads(ok("--json", "stat", bucket, "k", "--endpoint-url", endpoint))["size"] == 1
    assert json.loads(ok("url", bucket, "k", "--json", "--endpoint-url", endpoint))["url"].startswith(
        endpoint
    )
    assert "for s3:// URLs" in fails("ls", "memory://", "--endpoint-url", endpoint)
    assert "no profile" in fails("ls", bucket, "--profile", "nobody-has-this")


# -- 4 and 6. one API, one kind of time and size --------------------------------------------------


def test_the_command_and_the_code_tell_the_same_sizes_and_utc_times(moto_server: S3Target) -> None:
    raw = backends.S3RawBackend(
        moto_server.bucket, prefix=f"t-{os.urandom(4).hex()}", client=moto_server.client
    )
    raw["app.js"] = b"hello"  # gzipped in S3
    found = raw.stat("app.js")
    assert found is not None and found.size == 5 and found.stored_size and found.stored_size != 5  # was 25
    assert found.content_encoding == "gzip" and "backends-size" not in (found.metadata or {})
    listed = next(raw.stat_many())
    assert (listed.size, listed.stored_size) == (5, found.stored_size)
    assert found.last_modified and found.last_modified.tzinfo is timezone.utc  # was tzutc()
    assert listed.last_modified and listed.last_modified.tzinfo is timezone.utc  # was tzlocal()
    tier = backends.TieredBackend(backends.MemoryRawCache(), raw)
    assert tier.stat("app.js") == found and tier.url("app.js") == raw.url("app.js")
    raw.clear()


# -- 7. messages that point at the way out -------------------------------------------------------


def test_messages_say_the_rule_and_the_way_out(tmp_path: Path, bucket: str, moto_server: S3Target) -> None:
    endpoint = ["--endpoint-url", str(moto_server.endpoint_url)]
    short = fails("ls", "s3://ab", *endpoint)
    assert "3-63 characters: lowercase letters" in short
    long_name = fails("ls", "s3://Bad_Name!", *endpoint)
    assert "3-63 characters" in long_name and "regex" not in long_name and len(long_name) < 250
    assert "add ?create_bucket=true to the URL" in fails("ls", "s3://no-such-bucket-here", *endpoint)
    ok("put", f"{bucket}?format=raw", "photo", "-", *endpoint, stdin=bytes(range(256)))
    assert "?format=raw" in fails("get", bucket, "photo", *endpoint)
    ok("put", str(tmp_path / "docs"), "k", '"v"')
    assert "does not expire" in fails("url", str(tmp_path / "docs"), "k", "--expires", "60")
    unreachable = fails("ls", "s3://some-bucket?endpoint_url=http://127.0.0.1:9&retries=0")
    assert "with retries=0 (no retry)" in unreachable and "after retries" not in unreachable
    ok("put", f"{tmp_path / 'raw'}?format=raw", "k", "v")
    missing = fails("get", f"{tmp_path / 'raw'}?format=raw", "k", "-o", "/nonexistent/dir/x")
    assert "no folder /nonexistent/dir" in missing and ".tmp" not in missing
    assert "no folder" in fails("get", f"{bucket}?format=raw", "photo", "-o", "/nonexistent/dir/x", *endpoint)


# -- 8. try S3 in your own code --------------------------------------------------------------------


def test_the_readme_recipe_for_s3_on_this_machine_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    block = re.search(r"\.\. code-block:: python\n\n(    # S3 on this machine.*?)\n(?=\S)", text, re.S)
    assert block, "the recipe is in README.rst"
    code = "\n".join(line[4:] for line in block.group(1).splitlines())
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env(), timeout=120, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == ["{'name': 'Ada'}", "['users/42']"]
    assert done.stderr == b""  # moto's request log is silenced


# -- 9. the demo ---------------------------------------------------------------------------


def test_the_demo_keeps_what_it_shows_when_asked(tmp_path: Path) -> None:
    out = ok("demo", "--keys", "5", "--keep")
    shown = [
        Path(line.split(" (")[0].strip())
        for line in out.splitlines()
        if "/cache/" in line and "bytes)" in line
    ]
    assert shown and all(path.is_file() for path in shown)  # still there to look at
    kept = re.search(r"kept: the cache folder (\S+),", out)
    assert kept and Path(kept.group(1)).is_dir()
    shutil.rmtree(Path(kept.group(1)).parent)


def _requires(extra: str) -> list[str]:
    from importlib.metadata import requires

    marker = f'extra == "{extra}"'
    return [req.split(";")[0].strip() for req in requires("backends") or [] if marker in req]


def test_the_demo_extra_installs_moto_s3_not_every_aws_service() -> None:
    demo = _requires("demo")
    assert any(req.startswith("moto[s3]") for req in demo) and not any("server" in req for req in demo)
