"""More attacks on the SQLite store's size bound (issue 26): what test_sqlite_bound*.py do not make.

Another program's ``REPLACE`` under either setting of ``recursive_triggers``
(2), threads and processes past the bound at once and ``if_absent`` under
eviction (1, 9), ``close()`` while another thread writes and ``kill -9`` of a
bulk write (3), a value that never fits through every write path (5), the
recording of hits (7), fork while another thread writes (8), and the bounded
store under a tier, ``@cached``, views and the async twin (9).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backends import SqliteRawBackend


def books(path: str | Path) -> tuple[int, int, int, int]:
    """(kept bytes, true bytes, kept count, true count): what "exact" compares, with kv_count too."""
    db = sqlite3.connect(path)
    try:
        kept = db.execute("SELECT bytes FROM kv_bound").fetchone()[0]
        count = db.execute("SELECT n FROM kv_count").fetchone()[0]
        true, rows = db.execute(
            "SELECT COALESCE(SUM(length(CAST(key AS BLOB)) + length(CAST(data AS BLOB))), 0), COUNT(*)"
            " FROM kv"
        ).fetchone()
        assert db.execute("SELECT COUNT(*) FROM kv_use").fetchone()[0] == rows  # a use per row
        return kept, true, count, rows
    finally:
        db.close()


def exact(path: str | Path) -> tuple[int, int]:
    """The (bytes, rows), asserted exactly kept."""
    kept, true, count, rows = books(path)
    assert (kept, count) == (true, rows)
    return kept, rows


# -- 2: another program's REPLACE, whatever its connection's recursive_triggers -------------------


@pytest.mark.parametrize("recursive", [False, True])
@pytest.mark.parametrize(
    "sql",
    [
        "REPLACE INTO kv VALUES ('k2', zeroblob(30), 0, NULL, NULL)",
        "INSERT OR REPLACE INTO kv VALUES ('k2', zeroblob(30), 0, NULL, NULL)",
        "UPDATE OR REPLACE kv SET key = 'k1' WHERE key = 'k0'",
        "INSERT INTO kv VALUES ('k3', x'00', 0, NULL, NULL) ON CONFLICT (key) DO UPDATE SET data = x'0102'",
        "INSERT OR IGNORE INTO kv VALUES ('k3', x'00', 0, NULL, NULL)",
    ],
)
def test_another_programs_conflict_clauses_keep_the_count_exact(
    tmp_path: Path, sql: str, recursive: bool
) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path, maxsize=5)
    store.dump_many({f"k{i}": bytes(5) for i in range(5)})
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute(f"PRAGMA recursive_triggers = {int(recursive)}")
        other.execute(sql)
        _, rows = exact(path)
        assert len(store) == rows
        store["k4"] = b"again"  # an overwrite: nothing needs to go
        assert len(store) == rows and "k4" in store
        store["new"] = b"n"
        assert len(store) == 5 and "new" in store
        exact(path)
    finally:
        other.close()


# The insert trigger of the releases before this fix, as their files hold it.
_OLD_INSERT_TRIGGER = """
CREATE TRIGGER kv_use_added AFTER INSERT ON kv BEGIN
    UPDATE kv_bound SET bytes = bytes + length(CAST(new.key AS BLOB)) + length(CAST(new.data AS BLOB))
        - COALESCE((SELECT size FROM kv_use WHERE key = new.key), 0), tick = tick + 1;
    INSERT INTO kv_use VALUES (new.key, (SELECT tick FROM kv_bound),
        length(CAST(new.key AS BLOB)) + length(CAST(new.data AS BLOB)))
        ON CONFLICT (key) DO UPDATE SET used = excluded.used, size = excluded.size;
END
"""


def test_a_file_of_an_older_release_with_an_inflated_count_is_recounted_at_the_first_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kv.db"
    SqliteRawBackend(path, maxsize=5).dump_many({f"k{i}": bytes(5) for i in range(5)})
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("DROP TRIGGER kv_use_inserted")
        other.execute(_OLD_INSERT_TRIGGER)
        for _ in range(3):
            other.execute("REPLACE INTO kv VALUES ('k2', zeroblob(30), 0, NULL, NULL)")
        assert other.execute("SELECT n FROM kv_count").fetchone() == (8,)  # what the old trigger did
        store = SqliteRawBackend(path, maxsize=5)
        store["k4"] = b"again"  # the first bounded write: the bookkeeping rebuilt, the count too
        assert sorted(store) == [f"k{i}" for i in range(5)]  # none removed for the phantom rows
        names = {n for (n,) in other.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert "kv_use_added" not in names and "kv_use_inserted" in names
        assert exact(path)[1] == 5
    finally:
        other.close()
