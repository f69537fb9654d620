"""The attack classes of ATTACKS.md against every subcommand, as real subprocesses (issue 24).

Foreign data (strays in folders and buckets: named, counted, exit 1), hostile
text in every output (one line, escaped; ``--json`` valid UTF-8 JSON), bad
input in every argument (refused, nothing created), secrets never printed, a
closed output, and pressure (a full disk, a read-only folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers
from servers import CREDENTIALS, S3Target, free_port
from test_cli import env, fails, ok, run

import backends
from backends.filesystem.tree import MARKER

#: every kind of object name S3 takes that is no key here (moto's server refuses only a newline)
NOT_KEYS = [
    "logs//x",
    "/lead",
    "a/./b",
    "a/../b",
    ".",
    "..",
    "./x",
    "//",
    "trailing/",
    "ctl\x1b[31mx",
    "bell\x07",
    "cr\rx",
    "tab\tx",
    "del\x7f",
    "\x01",
    "x" * 1025,
    "report_$folder$",
]
#: names S3 takes that are keys here too
KEYS = ["ok/1", "é/\u0301", "a\\b", "sp ace", "a/b/c.json", "\u2028line-separator", "c1\u009b31m"]


def _bucket_url(moto_server: S3Target, prefix: str, fmt: str = "raw") -> str:
    return f"s3://{moto_server.bucket}/{prefix}?endpoint_url={moto_server.endpoint_url}&format={fmt}"


@pytest.fixture
def hostile_bucket(moto_server: S3Target) -> Iterator[tuple[str, str]]:
    """A prefix holding every kind of name, its keys' values their own names; (URL, prefix)."""
    prefix = f"attack-{os.urandom(4).hex()}"
    for name in [*NOT_KEYS, *KEYS]:
        body = b"" if name == "empty-marker/" else name.encode()
        moto_server.client.put_object(Bucket=moto_server.bucket, Key=f"{prefix}/{name}", Body=body)
    # Another tool's empty folder markers: no data, no strays.
    for marker in ("folder/", "old_$folder$"):
        moto_server.client.put_object(Bucket=moto_server.bucket, Key=f"{prefix}/{marker}", Body=b"")
    yield _bucket_url(moto_server, prefix), prefix
    listed = moto_server.client.list_objects_v2(Bucket=moto_server.bucket, Prefix=prefix + "/")
    for entry in listed.get("Contents", ()):
        moto_server.client.delete_object(Bucket=moto_server.bucket, Key=entry["Key"])


_BATCH = """
import json, os, sys, tempfile
from backends.cli import main
results = []
for argv in json.loads(sys.stdin.read()):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        out.seek(0)
        err.seek(0)
        results.append([status, out.read().hex(), err.read().hex()])
print(json.dumps(results))
"""


def batch(
    cases: list[list[str]], cwd: Path | None = None, extra: dict[str, str] | None = None
) -> list[tuple[int, bytes, bytes]]:
    """Run ``backends`` with each argv in one subprocess (its real fds, one start-up): (status, out, err)."""
    done = subprocess.run(
        [sys.executable, "-c", _BATCH],
        input=json.dumps(cases).encode(),
        capture_output=True,
        env={**env(), **(extra or {})},
        check=True,
        cwd=cwd,
        timeout=300,
    )
    return [(status, bytes.fromhex(out), bytes.fromhex(err)) for status, out, err in json.loads(done.stdout)]


def _one_line_each(stderr: bytes) -> list[str]:
    """stderr's lines, each checked: UTF-8, no control character but the newline ending it."""
    text = stderr.decode("utf-8")
    assert "Traceback" not in text
    lines = text.split("\n")
    assert lines[-1] == ""
    for line in lines[:-1]:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in line), repr(line)
        assert "\u2028" not in line and "\u202e" not in line
    return lines[:-1]


# -- foreign data: a bucket whose names are not keys -----------------------------------------


def test_cp_of_a_bucket_of_every_name_copies_each_object_or_names_it(
    hostile_bucket: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = hostile_bucket
    done = run("cp", url, f"{tmp_path / 'copy'}?format=raw")
    assert done.returncode == 1  # was 0, "copied 1"
    lines = _one_line_each(done.stderr)
    named = [line for line in lines if line.startswith("backends cp: not copied, not a key: ")]
    assert len(named) == len(NOT_KEYS)
    for name in NOT_KEYS:
        shown = name.translate({0x1B: "\\x1b", 7: "\\x07", 13: "\\r", 9: "\\t", 0x7F: "\\x7f", 1: "\\x01"})
        assert any(line.startswith(f"backends cp: not copied, not a key: {shown}: ") for line in named), name
    assert lines[-1].startswith(f"backends cp: {len(NOT_KEYS)} not copied (named above)")
    summary = done.stdout.decode()
    assert summary.startswith(
        f"copied {len(KEYS)}, skipped 0 already identical, {len(NOT_KEYS)} not copied, {len(KEYS)} keys ("
    )
    copied = backends.FileSystemRawBackend(tmp_path / "copy")
    assert dict(copied.items()) == {key: key.encode() for key in KEYS}  # each key copied, exactly
    again = json.loads(run("--json", "cp", url, f"{tmp_path / 'copy'}?format=raw").stdout)
    assert (again["copied"], again["skipped"], again["not_copied"]) == (0, len(KEYS), len(NOT_KEYS))
    assert len(again["not_keys"]) == len(NOT_KEYS)


def test_ls_of_a_bucket_names_every_object_that_is_no_key(
    hostile_bucket: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = hostile_bucket
    done = run("ls", url)
    assert done.returncode == 1
    listed = done.stdout.decode().splitlines()
    assert listed == [  # sorted by code point, escaped where a character acts on a terminal
        key.replace("\u2028", "\\u2028").replace("\u009b", "\\x9b") for key in sorted(KEYS)
    ]
    lines = _one_line_each(done.stderr)
    assert len([line for line in lines if "not listed, not a key: " in line]) == len(NOT_KEYS)
    assert lines[-1] == f"backends ls: {len(NOT_KEYS)} not listed, not keys (named above)"
    assert "folder/" not in done.stderr.decode() and "old_$folder$" not in done.stderr.decode()
    assert json.loads(run("ls", url, "--json").stdout) == sorted(KEYS)  # JSON: the keys exactly
    long = run("ls", url, "-l")
    assert long.returncode == 1 and len(long.stdout.decode().splitlines()) == len(KEYS)
    text = url.replace("format=raw", "format=text")
    tier = run("ls", f"cache://{tmp_path}?format=text::{text}")  # a tier lists its origin: its strays too
    assert tier.returncode == 1 and _one_line_each(tier.stderr)[-1] == lines[-1]


def test_strays_of_a_bucket_are_the_same_below_a_prefix_and_in_the_library(
    hostile_bucket: tuple[str, str], moto_server: S3Target
) -> None:
    _, prefix = hostile_bucket
    store = backends.S3RawBackend(moto_server.bucket, prefix=prefix, client=moto_server.client)
    strays = dict(store.strays())
    assert sorted(strays) == sorted(NOT_KEYS)
    assert strays["logs//x"] == "an empty segment ('//') in the name"
    assert strays["/lead"] == "the name starts with '/'"
    assert strays["x" * 1025] == "1025 UTF-8 bytes, more than 1024"
    assert "folder marker" in strays["report_$folder$"]
    assert dict(store.strays("logs/")) == {"logs//x": strays["logs//x"]}
    assert sorted(store) == sorted(KEYS)
    store.lock("ok/1").acquire()  # this library's lock object is no stray
    assert sorted(dict(store.strays())) == sorted(NOT_KEYS)


def test_cp_summary_counts_refused_keys_apart_from_identical_ones(tmp_path: Path) -> None:
    escaped = backends.FileSystemJsonBackend(tmp_path / "escaped")
    escaped.dump_many({"a": 1, "a/b": 2, "c": 3})
    target = backends.FileSystemJsonBackend(tmp_path / "plain", layout="plain")
    target["x"] = 0
    done = run("--json", "cp", str(tmp_path / "escaped"), str(tmp_path / "plain"))
    summary = json.loads(done.stdout)
    assert done.returncode == 1
    # was: copied 2, skipped 1 ("already identical"), 3 keys
    assert (summary["copied"], summary["skipped"], summary["not_copied"], summary["keys"]) == (2, 0, 1, 3)
    assert len(summary["refused"]) == 1
    text = run("cp", str(tmp_path / "escaped"), str(tmp_path / "plain")).stdout.decode()
    assert text.startswith("copied 0, skipped 2 already identical, 1 not copied, 3 keys")


# -- hostile text in every output --------------------------------------------------------------


def _hostile_tree(root: Path) -> Path:
    backends.FileSystemJsonBackend(root, layout="plain")["good"] = 1
    for name in (b"bad\xff", b"nl\nx", b"esc\x1b[31mred\x07", b"rtl\xe2\x80\xaeevil"):
        with open(os.path.join(os.fsencode(root), name), "wb") as out:
            out.write(b"1")
    return root


@pytest.mark.parametrize("encoding", [None, "utf-8", "ascii"])
def test_json_cp_is_valid_utf8_json_with_undecodable_bytes_as_backslash_x(
    tmp_path: Path, encoding: str | None
) -> None:
    tree = _hostile_tree(tmp_path / "tree")
    extra = {"PYTHONIOENCODING": encoding} if encoding else {}
    done = subprocess.run(
        [sys.executable, "-m", "backends", "--json", "cp", str(tree), "memory://"],
        capture_output=True,
        env={**env(), **extra},
        check=False,
    )
    assert done.returncode == 1
    summary = json.loads(done.stdout.decode("utf-8"))  # was: not UTF-8 (or, with utf-8, no summary)
    names = sorted(stray.split(": ")[0] for stray in summary["not_keys"])
    assert names == ["bad\\xff", "esc\x1b[31mred\x07", "nl\nx"]
    assert summary["copied"] == 2  # "good", and "rtl\u202eevil": a key
    assert b"\x1b" not in done.stdout and "\u202e".encode() not in done.stdout  # escaped in the JSON text
    _one_line_each(done.stderr)


@pytest.mark.parametrize("layout", ["plain", "escaped"])
def test_ls_and_cp_print_stray_names_escaped_on_one_line(tmp_path: Path, layout: str) -> None:
    tree = _hostile_tree(tmp_path / "tree")
    if layout == "escaped":  # where the escaped form of "rtl\u202eevil" would be "rtl%E2%80%AEevil"
        (tree / MARKER).write_text("escaped\n")
    bidi = ["rtl\\u202eevil"] if layout == "escaped" else []
    for args in (["ls", str(tree)], ["cp", str(tree), str(tmp_path / "copy")], ["ls", str(tree), "-l"]):
        done = run(*args)
        assert done.returncode == 1, done.stderr
        lines = _one_line_each(done.stderr)
        strays = [line for line in lines if "not a key: " in line]
        assert sorted(line.split("not a key: ")[1].split(": ")[0] for line in strays) == [
            "bad\\xff",
            "esc\\x1b[31mred\\x07",
            "nl\\nx",
            *bidi,
        ]
    listed = run("ls", str(tree)).stdout.decode().splitlines()
    assert listed == ["good"] + ([] if bidi else ["rtl\\u202eevil"])  # a key: its bidi override escaped


def test_every_output_line_escapes_what_it_did_not_write(tmp_path: Path, moto_server: S3Target) -> None:
    """Keys and values the store holds, hosts, URLs and options given: one line each, escaped."""
    url = str(tmp_path / "s")
    ok("put", url, "c1\u009b2J", '"v"')
    assert ok("ls", url) == "c1\\x9b2J\n"
    assert "c1\\x9b2J" in ok("stat", url, "c1\u009b2J") and "\u009b" not in ok("stat", url, "c1\u009b2J")
    cases = [
        ["ls", "s3://bucket?endpoint_url=http://127.0.0.1:9/\x1b[2J&retries=0"],
        ["ls", "s3://bucket/\x1b]0;pwned\x07?endpoint_url=http://127.0.0.1:9&retries=0"],
        ["get", url, "no\x1b[2Jkey"],
        ["get", url, "nl\nkey"],
        ["rm", url, "gone\u202e"],
        ["get", f"{tmp_path}/\x1b[2J\u009b\n", "k"],
        ["put", "memory://", "k", "{\x1b[2J"],
        ["ls", "redis://127.0.0.1:1/\x1b[2J"],
        ["cp", "memory://", "bogus\x1b[2J://x"],
        ["stat", "s3://b?endpoint_url=http://h\u202e:1&retries=0", "k"],
        ["url", url, "k", "--expires", "60"],
        ["purge", f"cache://{tmp_path}/\x1b[2J"],
    ]
    for args, (status, out, err) in zip(cases, batch(cases), strict=True):
        assert status == 1 and out == b"", (args, err)
        lines = _one_line_each(err)
        assert len(lines) == 1, (args, lines)


def test_json_of_every_subcommand_is_utf8_json(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    assert json.loads(ok("put", url, "k\u2028", '"\\u001b"', "--json")) == {"key": "k\u2028", "stored": True}
    assert json.loads(ok("ls", url, "--json")) == ["k\u2028"]
    out = ok("ls", url, "-l", "--json")
    assert json.loads(out)[0]["key"] == "k\u2028" and "\u2028" not in out
    assert json.loads(ok("stat", url, "k\u2028", "--json"))["key"] == "k\u2028"
    assert json.loads(ok("get", url, "k\u2028", "--json")) == "\x1b"
    done = run("rm", url, "k\u2028", "absent\u0085", "--json")
    assert json.loads(done.stdout) == {"deleted": 1, "missing": ["absent\u0085"]}
    assert "\u0085".encode() not in done.stdout + done.stderr and done.returncode == 1


# -- a closed output --------------------------------------------------------------------------


def _small_pipe() -> tuple[int, int]:
    """A pipe that holds 4 KiB: a listing of a few thousand keys fills it."""
    import fcntl

    read, write = os.pipe()
    fcntl.fcntl(write, 1031, 4096)  # F_SETPIPE_SZ
    return read, write


def _read_one_byte_then_close(argv: list[str], which: str) -> tuple[int, bytes]:
    """Run the command, read one byte of its stdout (or stderr) and close it, as ``| head -c 1``."""
    read, write = _small_pipe()
    other = subprocess.PIPE if which == "stdout" else subprocess.DEVNULL
    streams = {"stdout": write, "stderr": other} if which == "stdout" else {"stdout": other, "stderr": write}
    with subprocess.Popen([sys.executable, "-m", "backends", *argv], env=env(), **streams) as proc:
        os.close(write)
        os.read(read, 1)
        os.close(read)
        status = proc.wait(timeout=60)
        rest = proc.stderr.read() if proc.stderr is not None else b""
    return status, rest


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big")
    backends.FileSystemJsonBackend(root).dump_many({f"key-{i:05}": i for i in range(2000)})
    return root


@pytest.mark.parametrize("args", [["ls"], ["ls", "-l"], ["--json", "ls"], ["--json", "ls", "-l"]])
def test_a_closed_output_stops_quietly(big_tree: Path, args: list[str]) -> None:
    status, errors = _read_one_byte_then_close([*args, str(big_tree)], "stdout")
    assert (status, errors) == (141, b"")  # was: 1, "[Errno 32] Broken pipe"


def test_a_closed_stderr_stops_quietly_too(tmp_path: Path) -> None:
    tree = _hostile_tree(tmp_path / "tree")
    for index in range(300):
        (tree / f"stray\n{index}").write_bytes(b"")
    status, _ = _read_one_byte_then_close(["ls", str(tree)], "stderr")
    assert status == 141


# -- the real cause named -----------------------------------------------------------------------


def test_get_into_a_folder_and_put_from_one_name_the_path(tmp_path: Path) -> None:
    url = f"{tmp_path / 'd'}?format=raw"
    ok("put", url, "a/b", "x")
    (tmp_path / "out").mkdir()
    line = fails("get", url, "a/b", "-o", str(tmp_path / "out"))
    assert line == f"backends get: -o {tmp_path / 'out'}: is a folder; name the file to write"  # was: layout
    line = fails("put", url, "k", "--file", str(tmp_path / "out"))
    assert line.startswith(f"backends put: --file {tmp_path / 'out'}: ")  # was: "something ... at the key"
    assert "key's name" not in line
    assert sorted(os.listdir(tmp_path / "out")) == []
    assert "'k'" not in ok("ls", url)


def test_get_o_writes_a_whole_file_or_leaves_the_old_one(tmp_path: Path) -> None:
    url = f"{tmp_path / 'd'}?format=raw"
    ok("put", url, "k", "new")
    old = tmp_path / "out.bin"
    old.write_bytes(b"old")
    assert "not found" in fails("get", url, "absent", "-o", str(old))
    assert old.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["d", "out.bin"]
    ok("get", url, "k", "-o", str(old))
    assert old.read_bytes() == b"new"
    link = tmp_path / "link"
    link.symlink_to(old)
    ok("put", url, "k", "newer")
    ok("get", url, "k", "-o", str(link))
    assert link.is_symlink() and old.read_bytes() == b"newer"  # written through the link
    done = run("get", url, "k", "-o", "/dev/stdout")  # a device is written into, never replaced
    assert done.returncode == 0 and done.stdout == b"newer"


def test_put_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    for url in (f"{tmp_path / 'new'}?format=raw", str(tmp_path / "new"), f"cache://{tmp_path / 'new'}"):
        line = fails("put", url, "k", "--file", str(tmp_path / "typo.bin"))
        assert line == f"backends put: --file {tmp_path / 'typo.bin'}: No such file or directory"
        assert not (tmp_path / "new").exists()  # was: the folder and its layout file


def test_put_of_json_nested_too_deep_is_a_typed_error(tmp_path: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    done = run("put", str(tmp_path / "s"), "k", "-", stdin=deep)
    assert done.returncode == 1  # was: a RecursionError traceback
    assert done.stderr.decode().splitlines() == [
        f"backends put: FileSystemJsonBackend('{tmp_path / 's'}'): dump 'k': the value is JSON nested "
        "deeper than this program reads back; nothing was stored"
    ]
    assert not (tmp_path / "s").exists()
    # Stored by another program, it is read as the library reads it: CorruptValueError, no hint of binary.
    ok("put", f"{tmp_path / 'r'}?format=raw", "k", "-", stdin=deep)
    line = fails("get", str(tmp_path / "r"), "k")
    assert "stored data is not valid json" in line and "format=raw" not in line


# -- bad input in every argument -----------------------------------------------------------------


#: arguments argparse refuses (exit 2): counts, seconds, prefixes, endpoints, unknown options
MALFORMED = [
    ["demo", "--keys", "0"],
    ["demo", "--keys", "-5"],
    ["demo", "--keys", "10000000"],
    ["demo", "--keys", "1e3"],
    ["demo", "--keys", "٣\r\n"],
    ["url", "memory://", "k", "--expires", "-1"],
    ["url", "memory://", "k", "--expires", "nan"],
    ["url", "memory://", "k", "--expires", "inf"],
    ["url", "memory://", "k", "--expires", "1e400"],
    ["url", "memory://", "k", "--expires", "604801"],
    ["ls", "DIR", "--prefix", "a\r\nb"],
    ["ls", "DIR", "--prefix", "\udcff"],
    ["cp", "DIR", "DIR2", "--prefix", "a\x1b"],
    ["ls"],
    ["ls", "DIR", "--frobnicate"],
    ["ls", "s3://b", "--endpoint-url", "http://127.0.0.1:99999"],
    ["ls", "s3://b", "--endpoint-url", "http://127.0.0.1:9\r\n"],
    ["ls", "s3://b", "--endpoint-url", "127.0.0.1:9000"],
    ["demo", "--endpoint-url", "http://h\x1b[2J:1"],
]


def test_a_malformed_argument_is_a_usage_error_that_creates_nothing(tmp_path: Path) -> None:
    cases = [
        [arg.replace("DIR2", str(tmp_path / "b")).replace("DIR", str(tmp_path / "a")) for arg in args]
        for args in MALFORMED
    ]
    for args, (status, out, err) in zip(cases, batch(cases, cwd=tmp_path), strict=True):
        assert status == 2 and out == b"", (args, err)
        assert err.decode().startswith("usage: backends") and "Traceback" not in err.decode()
        assert "\x1b" not in err.decode(), err  # argparse repeats the value: escaped too
    assert os.listdir(tmp_path) == []


#: URLs, keys and values refused with one line (exit 1), and what the line names
BAD = [
    (["ls", "s3://bucket?endpoint_url=http://127.0.0.1:99999"], "endpoint_url"),
    (["ls", "s3://bucket?endpoint_url=http://127.0.0.1:5%0D%0AX-Evil:%201"], "endpoint_url"),
    (["ls", "s3://bucket?endpoint_url=http://127.0.0.1:5\r\nX-Evil: 1"], "control character"),
    (["ls", "s3://bucket?region=eu-we\r\nst&endpoint_url=http://127.0.0.1:9"], "control character"),
    (["ls", "s3://bucket?region=eu-we%0D%0Ast&endpoint_url=http://127.0.0.1:9"], "region"),
    (["ls", "s3://bucket?endpoint_url=ftp://127.0.0.1:9"], "endpoint_url is an http"),
    (["ls", "s3://bücket"], "bucket name"),
    (["ls", "s3://bucket?timeout=1e400"], "timeout"),
    (["ls", "s3://bucket?max_workers=99999999999999999999"], "max_workers"),
    (["ls", "redis://127.0.0.1:99999"], "port"),
    (["ls", "redis://127.0.0.1:-1"], "port"),
    (["ls", "cache://DIR?timeout=-1"], "timeout"),
    (["ls", "cache://DIR?timeout=nan"], "timeout"),
    (["put", "DIR", "a/../b", "1"], "invalid key"),
    (["put", "DIR", "k\r\n", "1"], "invalid key"),
    (["get", "DIR", "\udcff", "-o", "OUT"], "invalid key"),
    (["put", "DIR?format=bogus", "k", "1"], "format"),
    (["put", "DIR?layout=nope", "k", "1"], "layout"),
]


def test_a_bad_url_key_or_value_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    cases = [
        [arg.replace("DIR", str(tmp_path / "a")).replace("OUT", str(tmp_path / "o")) for arg in args]
        for args, _ in BAD
    ]
    for (args, message), (status, out, err) in zip(BAD, batch(cases, cwd=tmp_path), strict=True):
        assert status == 1 and out == b"", (args, err)
        lines = _one_line_each(err)
        assert len(lines) == 1 and message in lines[0], (args, lines)
    done = run("put", f"{tmp_path / 'a'}?format=text", "k", "-", stdin=b"\xff\xfe")
    assert done.returncode == 1 and "not UTF-8" in _one_line_each(done.stderr)[0]
    assert os.listdir(tmp_path) == []


# -- secrets ---------------------------------------------------------------------------------------

SECRET = "s3cr3t-planted-value"


def test_a_secret_is_never_printed() -> None:
    port = str(free_port())
    cases = [
        ["ls", f"s3://bucket?secret_key={SECRET}"],
        ["ls", f"s3://bucket?aws_session_token={SECRET}"],
        ["ls", f"s3://AKIA:{SECRET}@bucket"],
        ["ls", f"s3://bucket?endpoint_url=http://user:{SECRET}@127.0.0.1:9"],
        ["ls", f"s3://bucket?endpoint_url=http://user:{SECRET}@127.0.0.1:99999"],
        ["ls", "s3://b", "--endpoint-url", f"http://user:{SECRET}@127.0.0.1:99999"],
        ["--json", "cp", "memory://", f"s3://bucket?endpoint_url=http://u:{SECRET}@127.0.0.1:9"],
        ["ls", f"redis://:{SECRET}@127.0.0.1:{port}/0"],
        ["ls", f"redis://user:{SECRET}@127.0.0.1:{port}/0"],
        ["ls", f"redis://user:{SECRET}@127.0.0.1:99999/0"],
        ["ls", f"cache:///tmp/x?password={SECRET}"],
        ["ls", f"s3://bucket?endpoint_url=http://127.0.0.1:{port}&retries=0&timeout=2"],
        ["put", f"s3://bucket?endpoint_url=http://127.0.0.1:{port}&retries=0&timeout=2", "k", "1"],
        ["demo", "--endpoint-url", f"http://u:{SECRET}@127.0.0.1:{port}"],
    ]
    planted = {"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": SECRET, "REDIS_PASSWORD": SECRET}
    for args, (status, out, err) in zip(cases, batch(cases, extra=planted), strict=True):
        assert status in (1, 2), (args, err)
        assert SECRET.encode() not in out + err, (args, err)
        assert CREDENTIALS["aws_secret_access_key"].encode() not in out + err
        assert status == 2 or len(_one_line_each(err)) == 1, (args, err)


# -- pressure: a full disk, a read-only folder -------------------------------------------------------


def test_get_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    url = f"{tmp_path / 'd'}?format=raw"
    ok("put", url, "k", "-", stdin=os.urandom(100_000))
    line = fails("get", url, "k", "-o", "/dev/full")
    assert "No space left on device" in line
    assert os.path.exists("/dev/full") and not os.path.isfile("/dev/full")  # written into, never replaced
    ok("put", str(tmp_path / "j"), "k", '"v"')
    assert "No space left on device" in fails("get", str(tmp_path / "j"), "k", "-o", "/dev/full")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (the test is about ENOSPC and EROFS)."""
    with servers.small_disk(tmp_path / "disk", "256k") as where:
        yield where


def test_cp_onto_a_full_or_read_only_disk_says_what_it_copied(tmp_path: Path, small_disk: Path) -> None:
    source = backends.FileSystemRawBackend(tmp_path / "src")
    source.dump_many({f"k{i:03}": os.urandom(20_000) for i in range(40)})  # 800 kB: more than fits
    done = run("cp", f"{tmp_path / 'src'}?format=raw", f"{small_disk / 'copy'}?format=raw")
    assert done.returncode == 1
    lines = _one_line_each(done.stderr)
    assert len(lines) == 1 and "No space left on device" in lines[0]
    assert done.stdout.decode().endswith(", then stopped by an error\n")
    again = run("--json", "cp", f"{tmp_path / 'src'}?format=raw", f"{small_disk / 'copy'}?format=raw")
    summary = json.loads(again.stdout)
    assert "No space left on device" in summary["stopped"]
    written = backends.FileSystemRawBackend(small_disk / "copy")
    assert all(written[key] == source[key] for key in written)  # what is there is whole
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = run("cp", f"{tmp_path / 'src'}?format=raw", f"{small_disk / 'copy'}?format=raw")
    assert done.returncode == 1 and "read-only" in done.stderr.decode().lower()
    assert len(_one_line_each(done.stderr)) == 1
    line = fails("get", f"{tmp_path / 'src'}?format=raw", "k000", "-o", str(small_disk / "x"))
    assert line.startswith(f"backends get: -o {small_disk / 'x'}: cannot write there: Read-only file system")


def test_a_broken_pipe_that_is_no_output_of_ours_is_an_error(tmp_path: Path) -> None:
    """A FIFO given as ``-o`` whose reader goes away: exit 1, said in one line (not the quiet 141)."""
    url = f"{tmp_path / 'd'}?format=raw"
    ok("put", url, "k", "-", stdin=os.urandom(1 << 20))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with subprocess.Popen(
        [sys.executable, "-m", "backends", "get", url, "k", "-o", str(fifo)],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        with open(fifo, "rb") as reader:  # waits for the command to open it
            reader.read(1)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and out == b""
    assert "Broken pipe" in _one_line_each(err)[0]


def test_names_with_a_newline_are_strays_too(moto: S3Target) -> None:
    """moto's HTTP server refuses a newline in a name; S3 (and moto in-process) take it."""
    from backends.cli.cp import copy_all

    for name in ("nl\nx", "\n", "x/\n", "ok"):
        moto.client.put_object(Bucket=moto.bucket, Key=f"nl/{name}", Body=b"1")
    source = backends.S3RawBackend(moto.bucket, prefix="nl", client=moto.client)
    done = copy_all(source, backends.VolatileBackend())
    assert (done.copied, done.not_copied) == (1, 3)
    assert sorted(done.not_keys) == sorted(
        f"{name}: a control character in the name" for name in ("nl\nx", "\n", "x/\n")
    )


# -- time: a server that never answers ----------------------------------------------------------------


def test_a_server_that_never_answers_is_a_typed_error_within_the_timeout() -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (the backlog) and never answers one
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        cases = [
            ["ls", f"s3://bucket?endpoint_url={endpoint}&retries=0&timeout=1"],
            ["put", f"s3://bucket?endpoint_url={endpoint}&retries=0&timeout=1", "k", "1"],
            ["cp", "memory://", f"s3://bucket?endpoint_url={endpoint}&retries=0&timeout=1"],
        ]
        for args, (status, _, err) in zip(cases, batch(cases), strict=True):
            assert status == 1, (args, err)
            line = _one_line_each(err)[0]
            assert "timed out" in line or "timeout" in line, line
            assert "could not connect" not in line.lower(), line


# -- processes: several copies into one folder at once --------------------------------------------------


def test_four_copies_into_one_folder_at_once_agree(tmp_path: Path) -> None:
    source = backends.FileSystemJsonBackend(tmp_path / "src")
    source.dump_many({f"k/{i:03}": {"i": i} for i in range(300)})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "backends", "--json", "cp", str(tmp_path / "src"), str(tmp_path / "dst")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(),
        )
        for _ in range(4)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, [err for _, err in results]
    summaries = [json.loads(out) for out, _ in results]
    assert all(summary["copied"] + summary["skipped"] == 300 for summary in summaries)
    assert dict(backends.FileSystemJsonBackend(tmp_path / "dst").items()) == dict(source.items())


# -- closing: every store a command opens is closed when it ends ---------------------------------


def _open_under(root: Path) -> list[str]:
    """The files under ``root`` this process holds open (its descriptors, as /proc shows them)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used, closed meanwhile
            continue
        if target.startswith(str(root)):
            held.append(target)
    return sorted(held)


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["cp", "sqlite://{root}/a.db", "sqlite://{root}/b.db"], 0),
        (["cp", "sqlite://{root}/a.db", "sqlite://{root}/b.db?readonly=1"], 2),  # refused before copying
        (["cp", "sqlite://{root}/a.db", "cache://{root}/c::sqlite://{root}/b.db"], 0),
        (["ls", "sqlite://{root}/a.db"], 0),
        (["get", "sqlite://{root}/a.db", "k"], 0),
        (["get", "sqlite://{root}/a.db", "missing"], 1),  # a command that fails
        (["put", "sqlite://{root}/a.db", "k2", "2"], 0),
        (["rm", "sqlite://{root}/a.db", "k"], 0),
        (["stat", "sqlite://{root}/a.db", "k"], 0),
    ],
    ids=["cp", "cp into readonly", "cp into a tier", "ls", "get", "get missing", "put", "rm", "stat"],
)
def test_every_command_closes_the_stores_it_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], status: int
) -> None:
    from backends import SqliteJsonBackend
    from backends.cli import main

    source = SqliteJsonBackend(tmp_path / "a.db")
    source.dump("k", 1)
    source.close()
    SqliteJsonBackend(tmp_path / "b.db").close()
    assert _open_under(tmp_path) == []
    got = main([part.replace("{root}", str(tmp_path)) for part in argv])
    held = _open_under(tmp_path)  # before anything is collected: the command's own closing
    capsys.readouterr()
    assert (got, held) == (status, [])
