"""Attacks on the SQLite store's size bound (issue 26) that tests/test_sqlite_bound.py does not make.

Another program's SQL with a conflict clause (class 2): ``UPDATE OR REPLACE``
renaming a key onto another, ``REPLACE INTO`` over an existing row. SQLite
fires no DELETE trigger for the row a REPLACE removes (unless that
connection set ``recursive_triggers``), so the books must account for it in
the INSERT/UPDATE triggers themselves.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from test_sqlite_bound import books

from backends import SqliteRawBackend


def test_update_or_replace_renaming_a_key_onto_another_keeps_the_bytes_exact(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path, maxbytes=2_000)
    store.dump_many({f"k{i}": bytes(50) for i in range(5)})
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("UPDATE OR REPLACE kv SET key = 'k1' WHERE key = 'k0'")  # k1's old row goes, no trigger
        kept, true, rows = books(path)
        assert (kept, rows) == (true, 4)
        store["k9"] = bytes(10)
        kept, true, _ = books(path)
        assert kept == true
    finally:
        other.close()


def test_a_file_of_the_first_bounded_release_gets_the_new_triggers_at_its_first_write(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    SqliteRawBackend(path, maxbytes=2_000).dump_many({f"k{i}": bytes(50) for i in range(5)})
    other = sqlite3.connect(path, isolation_level=None)
    try:
        # the first bounded release's trigger name, as its files have it
        sql = other.execute("SELECT sql FROM sqlite_master WHERE name = 'kv_use_updated'").fetchone()[0]
        other.execute("DROP TRIGGER kv_use_updated")
        other.execute(sql.replace("kv_use_updated", "kv_use_changed"))
        store = SqliteRawBackend(path, maxbytes=2_000)
        store["x"] = b"1"  # rebuilds the bookkeeping: one UPDATE trigger, the new one
        names = {n for (n,) in other.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert "kv_use_changed" not in names and "kv_use_updated" in names
        kept, true, _ = books(path)
        assert kept == true
    finally:
        other.close()


def test_replace_into_over_an_existing_row_keeps_the_count_and_maxsize_exact(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path, maxsize=5)
    store.dump_many({f"k{i}": bytes(5) for i in range(5)})
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("REPLACE INTO kv VALUES ('k2', zeroblob(30), 0, NULL, NULL)")
        kept, true, rows = books(path)
        assert (kept, rows) == (true, 5)
        assert len(store) == 5
        store["k4"] = b"again"  # an overwrite: no entry needs to go
        assert sorted(store) == [f"k{i}" for i in range(5)]
    finally:
        other.close()
