"""The backends command, run as a real subprocess against file, memory and moto-server S3 URLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import CREDENTIALS, S3Target, free_port

import backends
from backends.filesystem.tree import MARKER

SUBCOMMANDS = ["ls", "get", "put", "rm", "stat", "url", "purge", "cp", "demo"]


def env() -> dict[str, str]:
    """The subprocess's environment: test credentials (never in a URL), no endpoint."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(
        AWS_ACCESS_KEY_ID=CREDENTIALS["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=CREDENTIALS["aws_secret_access_key"],
        AWS_DEFAULT_REGION="us-east-1",
    )
    return clean


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "backends", *args],
        check=False,
        input=stdin,
        capture_output=True,
        env=env(),
        timeout=120,
    )


def ok(*args: str, stdin: bytes | None = None) -> str:
    done = run(*args, stdin=stdin)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    return done.stdout.decode()


def fails(*args: str) -> str:
    """Run a command that must fail as a user error: exit 1, one line on stderr, no traceback."""
    done = run(*args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.fixture
def s3_url(moto_server: S3Target) -> Iterator[str]:
    prefix = f"cli-{os.urandom(4).hex()}"
    yield f"s3://{moto_server.bucket}/{prefix}?endpoint_url={moto_server.endpoint_url}"
    backends.S3JsonBackend(moto_server.bucket, prefix=prefix, client=moto_server.client).clear()


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    out = ok(command, "--help")
    assert out.startswith(f"usage: backends {command}")


def test_no_subcommand_is_a_usage_error() -> None:
    done = run()
    assert done.returncode == 2 and b"COMMAND" in done.stderr


@pytest.mark.parametrize("kind", ["file", "s3", "sqlite"])
def test_put_get_stat_ls_rm_round_trip(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    urls = {"file": f"file://{tmp_path}", "sqlite": f"sqlite://{tmp_path}/kv.db"}
    url = urls[kind] if kind in urls else request.getfixturevalue("s3_url")
    ok("put", url, "users/42", '{"name": "Ada", "langs": ["en", "fr"]}')
    ok("put", url, "users/43", "-", stdin=b'"from stdin"')
    assert json.loads(ok("get", url, "users/42")) == {"name": "Ada", "langs": ["en", "fr"]}
    assert sorted(ok("ls", url).split()) == ["users/42", "users/43"]
    assert ok("ls", url, "--prefix", "users/43").split() == ["users/43"]
    long = json.loads(ok("ls", url, "--long", "--json"))
    assert {row["key"]: row["size"] for row in long} == {"users/42": 34, "users/43": 12}
    assert all(row["last_modified"] for row in long)
    info = json.loads(ok("stat", url, "users/42", "--json"))
    assert info["key"] == "users/42" and info["size"] == 34
    if kind == "s3":
        assert info["etag"].startswith('"') and info["content_type"] == "application/json"
    assert "size: 34" in ok("stat", url, "users/42")
    ok("rm", url, "users/42")
    assert ok("ls", url).split() == ["users/43"]
    stored = backends.open(url) if kind in urls else None
    if stored is not None:
        assert dict(stored.items()) == {"users/43": "from stdin"}


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_raw_values_through_files_and_stdout(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (f"file://{tmp_path}/store" if kind == "file" else request.getfixturevalue("s3_url")) + (
        "&format=raw" if kind == "s3" else "?format=raw"
    )
    blob = bytes(range(256)) * 1000
    (tmp_path / "in.bin").write_bytes(blob)
    ok("put", url, "blobs/a.bin", "--file", str(tmp_path / "in.bin"))
    ok("get", url, "blobs/a.bin", "-o", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == blob
    done = run("get", url, "blobs/a.bin")
    assert done.returncode == 0 and done.stdout == blob


def test_text_values_stay_exact(tmp_path: Path) -> None:
    url = f"{tmp_path}?format=text"
    ok("put", url, "note", "-", stdin="héllo\r\nworld".encode())
    assert ok("get", url, "note") == "héllo\r\nworld"
    assert backends.FileSystemTextBackend(tmp_path)["note"] == "héllo\r\nworld"


def test_memory_urls_work_and_start_empty(tmp_path: Path) -> None:
    ok("put", "memory://", "k", "1")
    assert ok("ls", "memory://") == ""
    assert "not found" in fails("get", "memory://", "k")
    assert "not found" in fails("stat", "memory://", "k")
    assert "not found: 'k'" in fails("rm", "memory://", "k")
    backends.FileSystemJsonBackend(tmp_path).update({"a": 1, "b/c": [2]})
    assert json.loads(ok("cp", str(tmp_path), "memory://", "--json"))["copied"] == 2
    assert json.loads(ok("cp", "memory://", str(tmp_path), "--json"))["keys"] == 0
    assert "no URL" in fails("url", "memory://", "k")
    assert "no expiring entries" in fails("purge", "memory://")


def test_url_prints_file_and_s3_urls(tmp_path: Path, s3_url: str, moto_server: S3Target) -> None:
    assert ok("url", str(tmp_path), "a/b").strip() == (tmp_path / "a+" / "b").as_uri()
    plain = ok("url", s3_url, "users/42").strip()
    assert plain.startswith(f"{moto_server.endpoint_url}/{moto_server.bucket}/cli-") and plain.endswith(
        "/users/42"
    )
    signed = ok("url", s3_url, "users/42", "--expires", "600").strip()
    assert "X-Amz-Signature=" in signed and "X-Amz-Expires=600" in signed
    assert CREDENTIALS["aws_secret_access_key"] not in signed


def test_purge_removes_expired_cache_entries(tmp_path: Path) -> None:
    ok("put", f"cache://{tmp_path}?timeout=0", "gone", "1")  # timeout 0: expired at once
    ok("put", f"cache://{tmp_path}?timeout=none", "kept", "2")
    assert json.loads(ok("purge", f"cache://{tmp_path}", "--json")) == {"purged": 1}
    assert ok("purge", f"cache://{tmp_path}") == "purged 0 expired entries\n"
    assert ok("ls", f"cache://{tmp_path}").split() == ["kept"]


def test_cp_copies_2000_keys_to_s3_and_back_then_nothing(tmp_path: Path, s3_url: str) -> None:
    source = backends.FileSystemJsonBackend(tmp_path / "a")
    source.dump_many({f"docs/{i:04}": {"i": i, "text": "x" * (i % 50)} for i in range(2000)})
    first = json.loads(ok("cp", str(tmp_path / "a"), s3_url, "--json"))
    assert (first["copied"], first["skipped"]) == (2000, 0)
    again = json.loads(ok("cp", str(tmp_path / "a"), s3_url, "--json"))
    assert (again["copied"], again["skipped"]) == (0, 2000)  # resumable: identical keys are skipped
    back = ok("cp", s3_url, str(tmp_path / "b"))
    assert back.startswith("copied 2000, skipped 0 already identical, 2000 keys (")
    copy = backends.FileSystemJsonBackend(tmp_path / "b")
    assert dict(copy.items()) == dict(source.items())
    source["docs/0007"] = {"changed": True}
    assert json.loads(ok("cp", str(tmp_path / "a"), s3_url, "--json"))["copied"] == 1
    assert (
        json.loads(ok("cp", str(tmp_path / "a"), str(tmp_path / "c"), "--prefix", "docs/00", "--json"))[
            "copied"
        ]
        == 100
    )


def test_demo_runs_on_a_fresh_machine_and_cleans_up(tmp_path: Path) -> None:
    before = set(Path("/tmp").glob("backends-demo-*"))
    out = ok("demo", "--keys", "20")
    assert "wrote 20 JSON documents to S3: 20 PutObject" in out
    assert "20 misses, 20 GetObject" in out
    assert "warm: 20 hits, no S3 requests" in out
    assert "20 revalidations, 20 GetObject answered 304" in out
    assert "x faster" in out and "cleaned up" in out
    report = json.loads(ok("demo", "--keys", "5", "--json"))
    assert report["warm_read"] == {"requests": {}, "hits": 5, "misses": 0, "revalidations": 0}
    assert report["files"]["count"] == 5 and report["cleaned_up"] is True
    assert set(Path("/tmp").glob("backends-demo-*")) == before  # the cache folders are gone


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ls", "bogus://x"], "unknown URL scheme 'bogus'"),
        (["ls", "s3://AKIAX:hunter2-secret@bucket"], "credentials do not go in a URL"),
        (["get", "s3://b?colour=red", "k"], "unknown parameter 'colour'"),
        (["put", "memory://", "k", "{not json"], "not JSON"),
        (["put", "memory://", "a//b", "1"], "invalid key"),
        (["put", "memory://", "k"], "no value"),
    ],
)
def test_user_errors_print_one_line(args: list[str], message: str) -> None:
    line = fails(*args)
    assert message in line and "hunter2" not in line


def test_missing_keys_are_errors_and_nothing_is_written(tmp_path: Path) -> None:
    assert "'nope' not found" in fails("get", str(tmp_path), "nope")
    assert "'nope' not found" in fails("stat", str(tmp_path), "nope")
    ok("put", str(tmp_path), "here", "1")
    assert "not found: 'nope'" in fails("rm", str(tmp_path), "here", "nope")
    assert "not JSON" in fails("put", str(tmp_path), "bad", "{")
    assert sorted(set(os.listdir(tmp_path)) - {MARKER}) == []  # "here" was deleted; "bad" never written


def test_an_unreachable_endpoint_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    url = f"s3://bucket/p?endpoint_url={dead}&retries=0&timeout=2"
    assert "unreachable" in fails("ls", url)
    assert "unreachable" in fails("put", url, "k", "1")
    (tmp_path / "a").mkdir()
    backends.FileSystemJsonBackend(tmp_path / "a")["k"] = 1
    assert "unreachable" in fails("cp", str(tmp_path / "a"), url)


def test_cp_shows_a_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    backends.FileSystemJsonBackend(tmp_path / "a").update({f"k{i}": i for i in range(10)})
    terminal, child_side = pty.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100 characters
    done = subprocess.run(
        [sys.executable, "-m", "backends", "cp", str(tmp_path / "a"), str(tmp_path / "b")],
        check=False,
        stdout=subprocess.PIPE,
        stderr=child_side,
        env=env(),
        timeout=60,
    )
    os.close(child_side)
    shown = os.read(terminal, 65536).decode()
    os.close(terminal)
    assert done.returncode == 0 and done.stdout.startswith(b"copied 10,")
    assert "10 keys" in shown  # tqdm's bar, on the terminal
    assert run("cp", str(tmp_path / "a"), str(tmp_path / "c")).stderr == b""  # not a terminal: no bar


# -- Reliability II: bad options and half URLs are one line; reading creates nothing ------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ls", "s3://bucket?retries=-5"), "retries is a whole number"),
        (("ls", "s3://bucket?addressing_style=evil"), "addressing_style is"),
        (("ls", "s3://bucket?timeout=-1"), "timeout is seconds"),
        (("ls", "s3://bucket?max_workers=0"), "max_workers is"),
        (("ls", "s3://bucket?profile=nope"), "profile='nope' names no profile"),
        (("put", "s3:mybucket/app", "k", "1"), "'s3://mybucket/app'"),
        (("put", "s3:/bucket", "k", "1"), "'s3://bucket'"),
        (("ls", "memory:"), "'memory://'"),
        (("get", "cache:x", "k"), "'cache:///x'"),
    ],
)
def test_bad_options_and_half_urls_are_one_line_and_write_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    before = sorted(os.listdir(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "backends", *args], check=False, capture_output=True, env=env(), cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert sorted(os.listdir(tmp_path)) == before


def test_an_unknown_profile_in_the_environment_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backends", "ls", "s3://bucket"],
        check=False,
        capture_output=True,
        env={**env(), "AWS_PROFILE": "nope"},
    )
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        "backends ls: AWS_PROFILE in the environment names no profile in ~/.aws/config or "
        "~/.aws/credentials (The config profile (nope) could not be found)"
    ]


def test_reading_commands_never_create_the_folder(tmp_path: Path) -> None:
    typo = tmp_path / "typo" / "deeper"
    assert ok("ls", str(typo)) == ""
    fails("get", str(typo), "k")
    fails("stat", str(typo), "k")
    assert ok("purge", f"cache://{typo}").strip() == "purged 0 expired entries"
    assert not (tmp_path / "typo").exists()
    ok("put", str(typo), "k", "1")
    assert json.loads(ok("get", str(typo), "k")) == 1


def test_get_prints_a_lone_surrogate_escaped(tmp_path: Path) -> None:
    backends.FileSystemJsonBackend(tmp_path)["k"] = "a\ud800b"
    out = ok("get", str(tmp_path), "k")
    assert json.loads(out) == "a\ud800b"
    assert "\\ud800" in out


def test_stat_url_and_ls_of_a_tier_are_its_origins(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    tier = f"cache://{tmp_path / 'cache'}::file://{origin}"
    ok("put", tier, "k", '{"v": 1}')
    info = json.loads(ok("stat", tier, "k", "--json"))
    assert info["size"] == len(b'{"v":1}') and info["last_modified"] and info["expires"]
    assert info["content_type"] == "application/json"
    assert ok("url", tier, "k").strip() == (origin / "k").as_uri()
    row = json.loads(ok("ls", tier, "--long", "--json"))[0]
    assert row["size"] == len(b'{"v":1}') and row["last_modified"]
    assert "no URL" in fails("url", f"cache://{tmp_path / 'c'}::memory://", "k")


def test_the_command_on_redis(redis: str) -> None:
    url = f"{redis}?prefix=cli"
    ok("put", url, "users/42", '{"name": "Ada"}')
    ok("put", url, "users/43", '"x"')
    assert json.loads(ok("get", url, "users/42")) == {"name": "Ada"}
    assert ok("ls", url, "--prefix", "users/").split() == ["users/42", "users/43"]
    info = json.loads(ok("stat", url, "users/42", "--json"))
    assert info["size"] == len(b'{"name":"Ada"}') and len(info["etag"]) == 40
    ok("rm", url, "users/42")
    assert ok("ls", url).split() == ["users/43"]
    assert "no URL" in fails("url", url, "users/43")
    ok("rm", url, "users/43")
