"""The store file: created private, WAL, foreign keys, busy timeout, versioned and
migrated; foreign or newer files refused untouched; one sync at a time; user SQL
read-only unless asked; the indexes the common queries need are used."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from localstore.core.record import Record
from localstore.errors import StoreError, SyncInProgressError, UsageError
from localstore.ops.queries import run_sql
from localstore.store import db as store_module
from localstore.store.db import BUSY_TIMEOUT_MS, SCHEMA_VERSION, Store

DATASET = "5b3c1e52-8a57-4c34-9d0b-2f1e9c7b4a10"


def _record(n: int, dataset_id: str = DATASET) -> Record:
    return Record(
        id=f"00000000-0000-4000-8000-{n:012d}",
        dataset_id=dataset_id,
        created_at=f"2026-01-01T00:00:{n % 60:02d}.000000Z",
        updated_at="2026-01-02T00:00:00.000000Z",
        deleted_at=None,
        source="DIRECT_INPUT",
        payload={"messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]},
        properties={"n": n},
    )


def _fill(store: Store, n: int = 5) -> None:
    with store.transaction():
        store.upsert_dataset({"id": DATASET, "name": "demo"}, tracked=True)
        store.upsert_mirror([_record(i) for i in range(n)])


def dump(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store.db") as opened:
        _fill(opened)
        yield opened


# ------------------------------------------------------------------ opening


def test_a_new_store_is_private_and_stays_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "store.db"
    old = os.umask(0)  # the most permissive umask: 0600 must come from the store itself
    try:
        with Store.open(path) as opened:
            assert _mode(path) == 0o600
            _fill(opened, 50)
            with opened.sync_lock():
                pass
            siblings = [p for p in path.parent.iterdir() if p.name.startswith("store.db")]
            assert {p.name for p in siblings} >= {"store.db", "store.db.lock"}
            for sibling in siblings:  # -wal, -shm and the lock file too
                assert _mode(sibling) == 0o600, sibling.name
        with Store.open(path):
            pass
        assert _mode(path) == 0o600
    finally:
        os.umask(old)


def test_pragmas_of_an_open_store(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store.db") as opened:
        conn = opened.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS > 0
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), opened.transaction():
            opened.upsert_mirror([_record(1, dataset_id="not-a-known-dataset")])


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store.open(path) as opened:
        _fill(opened, 7)
    before = dump(path)
    with Store.open(path) as opened:
        assert opened.scalar("SELECT count(*) FROM records") == 7
    assert dump(path) == before


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_newer_store_is_refused_untouched(tmp_path: Path, journal: str) -> None:
    path = tmp_path / "store.db"
    with Store.open(path) as opened:
        _fill(opened)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA journal_mode = {journal}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "upgrade" in message and "newer" in message
    assert path.read_bytes() == before


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a localstore file") as caught:
        Store.open(path)
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == before


def test_another_applications_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
        conn.commit()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a localstore store") as caught:
        Store.open(path)
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists()


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory"):
        Store.open(tmp_path)


# ------------------------------------------------------------------ migrations


def test_an_older_store_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "store.db"
    with Store.open(path) as opened:
        _fill(opened, 3)
    current = store_module.SCHEMA_VERSION
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", current + 1)
    monkeypatch.setattr(
        store_module,
        "MIGRATIONS",
        {
            current: """ALTER TABLE datasets ADD COLUMN color TEXT NOT NULL DEFAULT 'blue';
                  CREATE INDEX datasets_by_color ON datasets (color);"""
        },
    )
    with Store.open(path) as opened:
        assert opened.scalar("PRAGMA user_version") == current + 1
        assert opened.scalar("SELECT color FROM datasets WHERE id = ?", (DATASET,)) == "blue"
        assert opened.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'datasets_by_color'") == 1
        assert opened.scalar("SELECT count(*) FROM records") == 3
    with Store.open(path) as opened:  # already there: the migration does not run again
        assert opened.scalar("PRAGMA user_version") == current + 1


def test_a_version_1_store_gets_a_base_per_part_and_json_pointer_parts(tmp_path: Path) -> None:
    """A store written by localstore with schema version 1 (tests/data/schema_v1.sql)."""
    path = tmp_path / "v1.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript((Path(__file__).parent / "data" / "schema_v1.sql").read_text())
        conn.execute("INSERT INTO datasets (id, tracked) VALUES (?, 1)", (DATASET,))
        for i in range(2):
            conn.execute(
                "INSERT INTO mirror VALUES (?, ?, 't0', 't1', NULL, 'DIRECT_INPUT', '{\"m\":1}', '{\"a\":1}')",
                (f"00000000-0000-4000-8000-00000000000{i}", DATASET),
            )
        conn.execute(
            """INSERT INTO working (record_id, dataset_id, properties, base_updated_at, base_payload,
                                    base_properties, state, conflict_parts, detected_at, created_at)
               VALUES ('00000000-0000-4000-8000-000000000000', ?, '{"a":2,"x/y":1}', 't1', '{"m":1}',
                       '{"a":1}', 'conflict', '["payload","properties.a","properties.x/y"]', 't2', 't2')""",
            (DATASET,),
        )
        conn.execute(
            """INSERT INTO changes (record_id, dataset_id, kind, body, base_updated_at, created_at)
               VALUES ('00000000-0000-4000-8000-000000000000', ?, 'properties', '{"a":2}', 't1', 't2')""",
            (DATASET,),
        )
        conn.commit()
    with Store.open(path) as opened:
        assert opened.scalar("PRAGMA user_version") == store_module.SCHEMA_VERSION
        row = opened.query("SELECT * FROM working")[0]
        assert row["base_payload_at"] == row["base_properties_at"] == "t1"
        assert json.loads(row["conflict_parts"]) == ["/payload", "/properties/a", "/properties/x~1y"]
        conflict = opened.query("SELECT parts, base FROM conflicts")[0]
        assert json.loads(conflict["base"]) == {"payload": {"m": 1}, "properties": {"a": 1}, "updated_at": "t1"}
        assert opened.scalar("SELECT count(*) FROM records") == 2
        assert opened.scalar("SELECT sent FROM changes") is None
        assert opened.scalar("PRAGMA integrity_check") == "ok"


def test_a_failing_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "store.db"
    with Store.open(path) as opened:
        _fill(opened, 3)
    before = dump(path)
    current = store_module.SCHEMA_VERSION
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", current + 1)
    monkeypatch.setattr(
        store_module,
        "MIGRATIONS",
        {current: "ALTER TABLE datasets ADD COLUMN color TEXT; ALTER TABLE no_such_table ADD COLUMN x;"},
    )
    with pytest.raises((sqlite3.Error, StoreError)):
        Store.open(path)
    assert dump(path) == before
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == current


# ------------------------------------------------------------------ the sync lock

HOLDER = """
import sys
from localstore.store.db import Store
with Store.open(sys.argv[1]) as store, store.sync_lock():
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_the_sync_lock_is_exclusive_across_processes_and_dies_with_its_holder(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    Store.open(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with Store.open(path) as opened:
            with pytest.raises(SyncInProgressError, match=rf"pid {holder.pid}\b"), opened.sync_lock():
                pytest.fail("a second holder got the lock")
            holder.kill()  # SIGKILL: no cleanup runs in the holder
            holder.wait(timeout=30)
            with opened.sync_lock():
                pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)


def test_the_sync_lock_is_exclusive_within_a_process(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store.open(path) as first, Store.open(path) as second:
        with first.sync_lock():
            with pytest.raises(SyncInProgressError) as caught, second.sync_lock():
                pytest.fail("a second holder got the lock")
            assert "\n" not in str(caught.value)
        with second.sync_lock():  # released on exit
            pass


# ------------------------------------------------------------------ user SQL


@pytest.mark.parametrize(
    "query",
    [
        "delete from records",
        "DELETE FROM mirror",
        "  -- a comment first\n update mirror set source = 'x'",
        "with x as (select 1) delete from mirror",
        "with x as (select 1) insert into datasets (id) select 'nope' from x",
        "attach database ':memory:' as other",
        "pragma user_version=9",
        "PRAGMA user_version(9)",
        "pragma journal_mode = delete",
        "create table t (x)",
        "drop view records",
        "vacuum",
        "select 1; delete from mirror",
    ],
)
def test_sql_is_read_only_without_write(store: Store, query: str) -> None:
    before = dump(store.path)
    with pytest.raises(UsageError) as caught:
        run_sql(store, query)
    assert "\n" not in str(caught.value)
    assert dump(store.path) == before
    assert store.scalar("PRAGMA user_version") == SCHEMA_VERSION


def test_sql_write_mutating_statements_say_how(store: Store) -> None:
    with pytest.raises(UsageError, match="--write"):
        run_sql(store, "delete from mirror")
    with pytest.raises(UsageError, match="--write"):
        run_sql(store, "with x as (select 1) delete from mirror")


def test_sql_reads_and_writes_with_write(store: Store) -> None:
    result = run_sql(store, "select count(*) as n from records")
    assert result.as_dicts() == [{"n": 5}]
    written = run_sql(store, "update records set properties = json_set(properties, '$.label', 'x')", write=True)
    assert written.queued is not None and written.queued.by_kind == {"properties": 5}
    assert store.scalar("SELECT count(*) FROM changes WHERE state = 'pending'") == 5
    before = dump(store.path)
    with pytest.raises(UsageError, match="only through the `records` view"):
        run_sql(store, "update datasets set name = 'renamed' where id = ?", (DATASET,), write=True)
    assert dump(store.path) == before
    with pytest.raises(UsageError, match="SQL error"):
        run_sql(store, "select * from no_such_table")


# ------------------------------------------------------------------ indexes

_MIRROR_SCAN = re.compile(r"\bSCAN (m|mirror)\b(?! VIRTUAL TABLE)")


def _plan(store: Store, query: str) -> list[str]:
    return [row[3] for row in store.conn.execute(f"EXPLAIN QUERY PLAN {query}", (DATASET,))]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT id, payload, properties FROM records WHERE dataset_id = ?",
        "SELECT count(*) FROM records WHERE dataset_id = ?",
        "SELECT record_id, idx, role, content FROM messages WHERE dataset_id = ?",
        "SELECT count(*) FROM messages WHERE dataset_id = ? AND role = 'user'",
        "SELECT id FROM remote_records WHERE dataset_id = ?",
    ],
)
def test_queries_by_dataset_use_the_index(store: Store, query: str) -> None:
    plan = _plan(store, query)
    assert any("INDEX mirror_by_dataset" in step for step in plan), plan
    assert not [step for step in plan if _MIRROR_SCAN.search(step)], plan
