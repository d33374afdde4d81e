"""A large first pull drops the mirror's id index, appends its records and builds the
index once at the end (``localstore.sync.mirror_writer.REBUILD_ID_INDEX_FROM``). That
path must leave exactly the mirror, the counts and the full-text index the upsert path
leaves, for any listing (records listed twice as pages shift, tombstones, values that
cannot travel as JSON text); nobody else may ever see the mirror without its index; a
listing that fails keeps what it wrote, with the index; a pull killed half way leaves
the store as it was. And a store of schema version 5 (the id a PRIMARY KEY) migrates."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_search import assert_index_true, indexed_docs

from localstore.api import Client, RetryPolicy
from localstore.core.record import Record
from localstore.errors import LocalstoreError
from localstore.store import db as store_module
from localstore.store.db import Store
from localstore.sync import mirror_writer
from localstore.sync.listing import list_dataset
from localstore.sync.mirror_writer import MirrorWriter
from localstore.sync.pull import pull
from localstore_emulator import EmulatorServer
from localstore_emulator.adversary import RECORDS, Rule, delete_first

REPO = Path(__file__).resolve().parents[1]
DS = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
OTHER = "0b9f4a7c-0000-4000-8000-000000000001"
STAMPS = ("2025-10-07T20:56:01.974Z", "2025-10-07T20:56:02.000Z", "2025-10-08T08:00:00.000Z")
FAST_RETRY = RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0, max_total_seconds=5.0)
MIRROR_COLUMNS = "id, dataset_id, created_at, updated_at, deleted_at, source, payload, properties"


def _index_of_ids(conn: sqlite3.Connection) -> tuple[str, int] | None:
    for _, name, unique, *_ in conn.execute("PRAGMA index_list(mirror)"):
        if name == "mirror_id":
            return name, unique
    return None


def _mirror(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return sorted(conn.execute(f"SELECT {MIRROR_COLUMNS} FROM mirror"))


# ------------------------------------------------------------------ the same as an upsert

# A listing: pages of records drawn from a few ids (so some are listed twice, with
# different contents, as when pages shift under it), some listed as tombstones. A
# deleted record is never listed live afterwards: the API has no undelete.
CONTENT = st.sampled_from([{"m": 1}, {"m": 2, "t": "é"}, {"nul": "a\x00b"}, {"deep": [1, {"x": None}]}])


@st.composite
def listings(draw: st.DrawFn) -> list[list[Record]]:
    deleted: set[str] = set()
    pages: list[list[Record]] = []
    for _ in range(draw(st.integers(1, 5))):
        page = []
        for _ in range(draw(st.integers(0, 4))):
            rid = f"00000000-0000-4000-8000-00000000000{draw(st.integers(0, 7))}"
            gone = rid in deleted or draw(st.integers(0, 9)) == 0
            stamp = draw(st.sampled_from(STAMPS))
            page.append(Record(rid, DS, STAMPS[0], stamp, stamp if gone else None, "DIRECT_INPUT",
                               draw(CONTENT), draw(CONTENT)))
            if gone:
                deleted.add(rid)
        pages.append(page)
    return pages


def _write_listing(path: Path, pages: list[list[Record]], others: int, rebuild: bool) -> tuple[Any, ...]:
    """Write the listing as a pull's first listing; what it left behind."""
    with Store.open(path) as store:
        store.ensure_dataset(OTHER)
        with store.transaction():
            for n in range(others):
                store.conn.execute(
                    f"INSERT INTO mirror ({MIRROR_COLUMNS}) VALUES (?, ?, ?, ?, NULL, 'DIRECT_INPUT', '{{}}', '{{}}')",
                    (f"ffffffff-0000-4000-8000-00000000000{n}", OTHER, STAMPS[0], STAMPS[0]),
                )
        count = len({r.id for page in pages for r in page})
        writer = MirrorWriter(store, DS, sole_writer=True)
        writer.expect(count)
        assert writer.rebuild_id_index is rebuild
        for page in pages:
            writer.add(page)
            writer.flush()  # a transaction per page at most: the drop happens in the first
        listed = writer.finish(SimpleNamespace(count=count, complete=True, problems=[]))
        assert not store.conn.in_transaction
        assert _index_of_ids(store.conn) == ("mirror_id", 1)
        assert store.scalar("PRAGMA integrity_check") == "ok"
        docs = indexed_docs(store)
        return (_mirror(store.conn), docs, listed.records, listed.removed, listed.conflicts,
                listed.complete, listed.problems)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(pages=listings(), others=st.sampled_from([0, 2, 20]))
def test_rebuilding_the_id_index_leaves_what_upserts_leave(
    tmp_path_factory: pytest.TempPathFactory, pages: list[list[Record]], others: int
) -> None:
    tmp = tmp_path_factory.mktemp("rebuild")
    count = len({r.id for page in pages for r in page})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mirror_writer, "REBUILD_ID_INDEX_FROM", 1)
        # (more rows mirrored already than the listing holds: rebuilding would cost more)
        rebuilt = _write_listing(tmp / "rebuilt.db", pages, others, rebuild=count > 0 and others <= count)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mirror_writer, "REBUILD_ID_INDEX_FROM", 10**9)
        upserted = _write_listing(tmp / "upserted.db", pages, others, rebuild=False)
    assert rebuilt == upserted


def test_a_record_listed_twice_keeps_the_row_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror_writer, "REBUILD_ID_INDEX_FROM", 1)

    def record(n: int, content: int) -> Record:
        return Record(f"r-{n}", DS, STAMPS[0], STAMPS[content], None, "DIRECT_INPUT", {"v": content}, {})

    with Store.open(tmp_path / "s.db") as store:
        writer = MirrorWriter(store, DS, sole_writer=True)
        writer.expect(3)
        writer.add([record(1, 0), record(2, 0)])
        writer.flush()
        assert writer.id_index_dropped
        writer.add([record(2, 1), record(3, 0), record(1, 2)])
        listed = writer.finish(SimpleNamespace(count=3, complete=True, problems=[]))
        assert (listed.complete, listed.problems) == (True, [])
        assert dict(store.conn.execute("SELECT id, updated_at FROM mirror")) == {
            "r-1": STAMPS[2], "r-2": STAMPS[1], "r-3": STAMPS[0]
        }
        assert _index_of_ids(store.conn) == ("mirror_id", 1)
        assert_index_true(store)


def test_nobody_else_sees_the_mirror_without_its_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror_writer, "REBUILD_ID_INDEX_FROM", 1)
    monkeypatch.setattr(mirror_writer, "PULL_COMMIT_SECONDS", 0.0)  # (due at once otherwise)
    path = tmp_path / "s.db"
    stamp = STAMPS[0]
    with Store.open(path) as store, closing(sqlite3.connect(path, timeout=0.05)) as other:
        writer = MirrorWriter(store, DS, sole_writer=True)
        writer.expect(10)
        for n in range(10):
            writer.add([Record(f"r-{n}", DS, stamp, stamp, None, "DIRECT_INPUT", {}, {})])
            writer.flush()
            assert writer.id_index_dropped and store.conn.in_transaction  # one transaction
            assert _index_of_ids(other) == ("mirror_id", 1)
            assert other.execute("SELECT count(*) FROM mirror").fetchone() == (0,)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        writer.finish(SimpleNamespace(count=10, complete=True, problems=[]))
        assert _index_of_ids(other) == ("mirror_id", 1)
        assert other.execute("SELECT count(*) FROM mirror").fetchone() == (10,)


# ------------------------------------------------------------------ pulls from the server


@pytest.fixture
def adversary(emulator: EmulatorServer) -> Iterator[Any]:
    emulator.adversary.reset()
    yield emulator.adversary
    emulator.adversary.reset()


@pytest.fixture
def appended(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pulls of 100 records or more rebuild the id index; counts the batches appended
    without it (so a test knows the path under test was taken)."""
    monkeypatch.setattr(mirror_writer, "REBUILD_ID_INDEX_FROM", 100)
    calls: list[int] = []
    real = mirror_writer.insert_batch

    def insert_batch(conn: sqlite3.Connection, text: str) -> None:
        calls.append(1)
        real(conn, text)

    monkeypatch.setattr(mirror_writer, "insert_batch", insert_batch)
    return calls


def test_a_first_pull_while_pages_shift_ends_with_the_server_and_its_index(
    tmp_path: Path, emulator: EmulatorServer, api_key: str, dataset: Any, adversary: Any, appended: list[int]
) -> None:
    ds = dataset(700)
    adversary.on_page(ds, 2, delete_first(ds, 150))  # the later pages slide back onto read ones
    with Store.open(tmp_path / "s.db") as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds], concurrency=4)
        assert appended, "the first pull did not take the rebuild path"
        assert _index_of_ids(store.conn) == ("mirror_id", 1)
        assert store.scalar("PRAGMA integrity_check") == "ok"
        pull(store, client, [ds])  # a second pull: what was deleted meanwhile goes
        server = {r["id"]: r["properties"] for r in emulator.state.list_records(ds)}
        local = {r["id"]: r["properties"] for r in store.query("SELECT id, properties FROM records")}
        assert {k: json.loads(v) for k, v in local.items()} == server
        assert_index_true(store)


def test_a_listing_that_fails_keeps_what_it_wrote_with_the_index(
    tmp_path: Path, emulator: EmulatorServer, api_key: str, dataset: Any, adversary: Any, appended: list[int]
) -> None:
    ds = dataset(3000)  # a batch (2,500 records) is written before page 28 is asked for
    adversary.add(Rule("GET", RECORDS, dataset_id=ds, page=28, times=None, effect="fail_before", status=500))
    with Store.open(tmp_path / "s.db") as store, Client(emulator.url, api_key, retry=FAST_RETRY) as client:
        with pytest.raises(LocalstoreError):
            list_dataset(store, client, ds, concurrency=1, sole_writer=True)
        assert appended
        assert not store.conn.in_transaction
        assert _index_of_ids(store.conn) == ("mirror_id", 1)
        kept = {r["id"] for r in store.query("SELECT id FROM mirror WHERE dataset_id = ?", (ds,))}
        first_pages = [r["id"] for r in emulator.state.list_records(ds)][:2700]
        assert len(kept) >= 2500 and kept <= set(first_pages)  # (a page or two more when idle)
        assert store.scalar("PRAGMA integrity_check") == "ok"


KILLED_PULL = textwrap.dedent("""
    import sys
    from localstore.sync import mirror_writer
    mirror_writer.REBUILD_ID_INDEX_FROM = 100
    from localstore.cli import main
    main(sys.argv[1:])
""")


@pytest.mark.slow  # a localstore subprocess, killed
def test_a_pull_killed_half_way_leaves_the_store_as_it_was(
    tmp_path: Path, emulator: EmulatorServer, api_key: str, dataset: Any, adversary: Any,
) -> None:
    db = tmp_path / "s.db"
    Store.open(db).close()
    ds = dataset(3000)  # a batch (2,500 records) is written before page 28 is asked for
    held = adversary.add(Rule("GET", RECORDS, dataset_id=ds, page=28, hold=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    env.update(MISTRAL_API_KEY=api_key, LOCALSTORE_SERVER_URL=emulator.url)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PULL, "--db", str(db), "pull", ds, "--concurrency", "1"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert held.wait_entered(timeout=60), "the pull never asked for page 28"
        with closing(sqlite3.connect(db)) as conn:  # pages 1-25 are written, uncommitted
            assert _index_of_ids(conn) == ("mirror_id", 1)
            assert conn.execute("SELECT count(*) FROM mirror").fetchone() == (0,)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        held.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Store.open(db) as store:
        assert store.scalar("PRAGMA integrity_check") == "ok"
        assert _index_of_ids(store.conn) == ("mirror_id", 1)
        assert store.scalar("SELECT count(*) FROM mirror") == 0


# ------------------------------------------------------------------ the migration


def test_a_version_5_store_gets_its_id_index(tmp_path: Path) -> None:
    """A store whose mirror has ``id TEXT PRIMARY KEY`` (schema version 5) keeps every
    row and ends exactly as a new store's schema."""
    schema = (REPO / "schema.sql").read_text(encoding="utf-8")
    old = schema.replace("    id         TEXT NOT NULL,\n    dataset_id TEXT NOT NULL REFERENCES datasets",
                         "    id         TEXT PRIMARY KEY,\n    dataset_id TEXT NOT NULL REFERENCES datasets", 1)
    old = old.replace("CREATE UNIQUE INDEX mirror_id ON mirror (id);\n", "", 1)
    old = old.replace(f"PRAGMA user_version = {store_module.SCHEMA_VERSION};", "PRAGMA user_version = 5;", 1)
    assert old.count("TEXT PRIMARY KEY,\n    dataset_id TEXT NOT NULL REFERENCES datasets") >= 1
    assert "mirror_id" not in old and "user_version = 5;" in old
    path = tmp_path / "v5.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(old)
        conn.execute("INSERT INTO datasets (id, tracked) VALUES (?, 1)", (DS,))
        for n in range(5):
            conn.execute(
                f"""INSERT INTO mirror ({MIRROR_COLUMNS})
                    VALUES (?, ?, ?, ?, ?, 'DIRECT_INPUT', ?, '{{"n": {n}}}')""",
                (f"r-{n}", DS, STAMPS[0], STAMPS[1], STAMPS[2] if n == 4 else None,
                 '{"messages": [{"role": "user", "content": "zebrafruit"}]}'),
            )
        conn.execute(
            """INSERT INTO working (record_id, dataset_id, properties, base_payload, base_properties, created_at)
               VALUES ('r-4', ?, '{"n": 9}', '{}', '{}', ?)""",
            (DS, STAMPS[2]),
        )
        conn.commit()
        before = _mirror(conn)
    with Store.open(path) as store:
        assert store.scalar("PRAGMA user_version") == store_module.SCHEMA_VERSION
        assert _mirror(store.conn) == before
        assert _index_of_ids(store.conn) == ("mirror_id", 1)
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute(f"INSERT INTO mirror ({MIRROR_COLUMNS}) SELECT {MIRROR_COLUMNS} FROM mirror LIMIT 1")
        assert store.scalar("PRAGMA integrity_check") == "ok"
        assert store.scalar("SELECT count(*) FROM records") == 5
        assert_index_true(store)
    Store.open(tmp_path / "new.db").close()

    def objects(p: Path) -> list[tuple[str, str, str | None]]:
        with closing(sqlite3.connect(p)) as conn:
            return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master"))

    assert objects(path) == objects(tmp_path / "new.db")
