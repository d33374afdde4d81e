"""Issue 13, end to end through the command line (each ``localstore`` call is a
subprocess): SQL writes through ``records`` queue what ``set``/``edit``/``rm``/``add``
queue; every refusal is one line and leaves the store's dump byte-identical; ``--where``
on ``set``/``unset``/``rm``/``revert``; ``export`` and ``import``; a round trip read back
with the official SDK; a teammate's change to a key an SQL UPDATE changed is a conflict,
exactly as after ``set``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localstore.api import Client
from localstore.store.db import Store
from localstore.store.jsontext import canonical
from localstore.sync.pull import pull
from localstore.sync.run import sync
from localstore_emulator import EmulatorServer, seed_dataset

pytestmark = pytest.mark.slow  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not

UNKNOWN_DATASET = "00000000-0000-4000-8000-000000000000"


# ------------------------------------------------------------------ helpers


@dataclass
class Base:
    """A store with 12 mirrored records of ``ds`` (and an empty dataset ``empty``): one
    (``conflict``) in conflict, one (``pending``) with a pending properties edit."""

    path: Path
    ds: str
    empty: str
    ids: list[str]  # the plain records, in `records` order
    conflict: str
    pending: str


@dataclass
class Run:
    db: Path
    env: dict[str, str]

    def __call__(self, *args: str, code: int = 0, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "localstore", "--db", str(self.db), *args],
            capture_output=True, text=True, env=self.env, input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL, cwd=self.db.parent, timeout=120,
        )
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        return done

    def out(self, *args: str, stdin: str | None = None) -> str:
        return self(*args, stdin=stdin).stdout

    def refused(self, *args: str, needle: str) -> str:
        """Exit 1, one line ``localstore: error: …`` naming ``needle``, nothing changed."""
        before = dump(self.db)
        done = self(*args, code=1)
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("localstore: error: "), done.stderr
        assert needle.lower() in done.stderr.lower(), (needle, done.stderr)
        assert dump(self.db) == before
        return done.stderr


def dump(db: Path) -> str:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return "\n".join(conn.iterdump())


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def queued_state(db: Path, known: set[str]) -> tuple[list[Any], list[Any]]:
    """working and changes rows, ids and timestamps aside (a statement visits rows in
    its own order, so changes are compared as a sorted list); provisional ids of new
    creates numbered in the order they were logged."""
    names: dict[str, str] = {}
    for (rid,) in query(db, "SELECT record_id FROM changes ORDER BY id"):
        if rid not in known and rid not in names:
            names[rid] = f"new-{len(names)}"
    working = sorted(
        (names.get(r[0], r[0]), *r[1:]) for r in query(
            db, """SELECT record_id, dataset_id, payload, properties, deleted, is_create, base_payload,
                          base_payload_at, base_properties, base_properties_at, state FROM working""")
    )
    changes = sorted(
        (names.get(r[0], r[0]), *r[1:]) for r in query(
            db, """SELECT record_id, dataset_id, kind, body, base_updated_at, state, error
                   FROM changes ORDER BY id""")
    )
    return working, changes


def known_ids(db: Path) -> set[str]:
    return {r[0] for r in query(db, "SELECT id FROM mirror UNION SELECT record_id FROM working")}


@pytest.fixture(scope="module")
def base(emulator: EmulatorServer, api_key: str, tmp_path_factory: pytest.TempPathFactory) -> Base:
    ds = seed_dataset(emulator.state, 12, name="bulk-cli-base", seed=13)
    empty = seed_dataset(emulator.state, 0, name="bulk-cli-empty")
    path = tmp_path_factory.mktemp("bulk") / "base.db"
    with Store.open(path) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds, empty])
        ids = [r[0] for r in store.conn.execute("SELECT id FROM records ORDER BY created_at, id")]
        conflict, pending = ids[-1], ids[-2]
        from localstore.ops.edits import set_properties

        set_properties(store, conflict, {"label": "ours"})
        emulator.state.update_properties(conflict, {"label": "theirs"})
        sync(store, client)
        set_properties(store, pending, {"label": "pending"})
        assert store.scalar("SELECT count(*) FROM conflicts") == 1
    return Base(path, ds, empty, ids[:-2], conflict, pending)


@pytest.fixture
def run(base: Base, tmp_path: Path, emulator: EmulatorServer, api_key: str) -> Run:
    """A copy of the base store, offline by default (nothing listens on port 9)."""
    db = tmp_path / "store.db"
    shutil.copy(base.path, db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALSTORE_", "MISTRAL_"))}
    env.update(MISTRAL_API_KEY=api_key, LOCALSTORE_SERVER_URL="http://127.0.0.1:9")
    return Run(db, env)


@pytest.fixture
def twin(run: Run, tmp_path: Path) -> Run:
    """A second copy of the same store, for the per-record commands."""
    db = tmp_path / "twin.db"
    shutil.copy(run.db, db)
    return Run(db, run.env)


def ids_sql(ids: list[str]) -> str:
    return ", ".join(f"'{i}'" for i in ids)


def record(db: Path, rid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    payload, properties = query(db, "SELECT payload, properties FROM records WHERE id = ?", (rid,))[0]
    return json.loads(payload), json.loads(properties)


# ------------------------------------------------------------------ SQL writes = the per-record commands


def test_update_of_properties_queues_what_set_queues(base: Base, run: Run, twin: Run) -> None:
    targets = [*base.ids[:3], base.pending]
    out = run.out("sql", "--write", "UPDATE records SET properties = json_set(properties, '$.label', 'apology') "
                  f"WHERE id IN ({ids_sql(targets)})")
    assert out == "queued changes for 4 record(s): properties 4\n"
    for rid in targets:
        twin.out("set", rid, "label=apology")
    known = known_ids(run.db)
    assert queued_state(run.db, known) == queued_state(twin.db, known)
    assert json.loads(run.out("status", "--json"))["pending"] == 4


def test_update_of_the_payload_queues_what_edit_queues(base: Base, run: Run, twin: Run, tmp_path: Path) -> None:
    rid = base.ids[0]
    out = run.out("sql", "--write", "UPDATE records SET payload = json_set(payload, '$.messages[0].content', "
                  f"'You are a careful assistant.') WHERE id = '{rid}'")
    assert out == "queued changes for 1 record(s): payload 1\n"
    payload, _ = record(twin.db, rid)
    payload["messages"][0]["content"] = "You are a careful assistant."
    (tmp_path / "p.json").write_text(json.dumps(payload))
    twin.out("edit", rid, "--payload-file", str(tmp_path / "p.json"))
    known = known_ids(run.db)
    assert queued_state(run.db, known) == queued_state(twin.db, known)


def test_delete_queues_what_rm_queues(base: Base, run: Run, twin: Run, tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"messages": []}')
    for r in (run, twin):  # an offline create, never sent: a delete drops it
        r.out("add", base.ds, "--payload-file", str(tmp_path / "p.json"))
    created = query(run.db, "SELECT record_id FROM working WHERE is_create = 1")[0][0]
    twin_created = query(twin.db, "SELECT record_id FROM working WHERE is_create = 1")[0][0]
    out = run.out("sql", "--write", f"DELETE FROM records WHERE id IN ({ids_sql([base.ids[0], base.pending, created])})")
    assert out == ("queued changes for 2 record(s): delete 2; dropped 1 create(s) never sent; "
                   "the deletes replace pending edits of 1 record(s)\n")
    twin.out("rm", base.ids[0], base.pending, twin_created)
    known = known_ids(base.path)  # the two offline creates are numbered, not named
    assert queued_state(run.db, known) == queued_state(twin.db, known)


def test_insert_queues_what_add_queues(base: Base, run: Run, twin: Run, tmp_path: Path) -> None:
    rows = [({"messages": [{"role": "user", "content": f"case {i}"}]}, {"label": "new", "i": i}) for i in range(3)]
    values = ", ".join(f"('{base.ds}', '{json.dumps(p)}', '{json.dumps(q)}')" for p, q in rows)
    out = run.out("sql", "--write", f"INSERT INTO records (dataset_id, payload, properties) VALUES {values}")
    assert out == "queued changes for 3 record(s): create 3\n"
    for i, (p, q) in enumerate(rows):
        (tmp_path / f"p{i}.json").write_text(json.dumps(p))
        (tmp_path / f"q{i}.json").write_text(json.dumps(q))
        twin.out("add", base.ds, "--payload-file", str(tmp_path / f"p{i}.json"),
                 "--properties-file", str(tmp_path / f"q{i}.json"))
    known = known_ids(base.path)
    assert queued_state(run.db, known) == queued_state(twin.db, known)
    # provisional ids, shown by --json; no properties given means {}
    created = json.loads(run.out("sql", "--write", "--json",
                                 f"INSERT INTO records (dataset_id, payload) VALUES ('{base.ds}', '{{}}')"))
    (new,) = created["created_ids"]
    assert record(run.db, new) == ({}, {})


def test_a_row_whose_value_does_not_change_queues_nothing(base: Base, run: Run) -> None:
    before = dump(run.db)
    out = run.out("sql", "--write", "UPDATE records SET properties = json(properties), payload = json(payload) "
                  "WHERE sync_state != 'conflict'")
    assert out == "nothing queued: 11 row(s) unchanged\n"
    assert dump(run.db) == before
    run.out("set", base.ids[0], "score=1")
    before = dump(run.db)
    # 1.0 is the number 1; json_set appends keys in another order: the same JSON value
    out = run.out("sql", "--write", "UPDATE records SET properties = json_set(json_remove(properties, '$.score'), "
                  f"'$.score', 1.0) WHERE id = '{base.ids[0]}'")
    assert out == "nothing queued: 1 row(s) unchanged\n"
    assert dump(run.db) == before
    assert run.out("sql", "--write", "DELETE FROM records WHERE 0") == "nothing queued: no row matched\n"


def test_sql_json_prints_json_columns_as_values_one_per_line_with_nl(base: Base, run: Run) -> None:
    rows = json.loads(run.out("sql", "--json", f"SELECT id, payload, properties FROM records WHERE id = '{base.pending}'"))
    assert rows[0]["properties"]["label"] == "pending" and isinstance(rows[0]["payload"]["messages"], list)
    body = json.loads(run.out("sql", "--json", "SELECT body FROM changes WHERE kind = 'properties' LIMIT 1"))
    assert isinstance(body[0]["body"], dict)
    lines = run.out("sql", "--nl", "SELECT id, properties FROM records ORDER BY id LIMIT 3").splitlines()
    assert len(lines) == 3 and all(isinstance(json.loads(line)["properties"], dict) for line in lines)
    # a column that merely looks like JSON is left alone
    assert json.loads(run.out("sql", "--json", "SELECT '{\"a\": 1}' AS text")) == [{"text": '{"a": 1}'}]


# ------------------------------------------------------------------ refusals


REFUSED_ROWS = [
    ("UPDATE records SET payload = '[1]' WHERE id = '{a}'", "record {a}: payload must be a JSON object, got list"),
    ("UPDATE records SET properties = 'not json' WHERE id = '{a}'", "record {a}: properties is not valid JSON"),
    ("UPDATE records SET properties = NULL WHERE id = '{a}'", "must be a JSON object, got null"),
    ("UPDATE records SET properties = 7 WHERE id = '{a}'", "got the number 7"),
    ("UPDATE records SET id = 'x' WHERE id = '{a}'", "record {a}: the statement changes id"),
    ("UPDATE records SET dataset_id = '{empty}' WHERE id = '{a}'", "changes dataset_id"),
    ("UPDATE records SET created_at = 'yesterday' WHERE id = '{a}'", "changes created_at"),
    ("UPDATE records SET updated_at = NULL WHERE id = '{a}'", "changes updated_at"),
    ("UPDATE records SET source = 'OTHER' WHERE id = '{a}'", "changes source"),
    ("UPDATE records SET properties = json_set(properties, '$.x', 1)", "record {conflict} has a conflict"),
    ("DELETE FROM records WHERE id = '{conflict}'", "record {conflict} has a conflict"),
    # one bad row among good ones: the whole statement, nothing queued
    ("UPDATE records SET properties = CASE WHEN id = '{b}' THEN '[]' ELSE json_set(properties, '$.x', 1) END "
     "WHERE sync_state != 'conflict'", "record {b}: properties must be a JSON object"),
    ("INSERT INTO records (dataset_id, payload) VALUES ('{unknown}', '{{}}')", "dataset {unknown} is not in the store"),
    ("INSERT INTO records (payload) VALUES ('{{}}')", "inserted row 1 has no dataset_id"),
    ("INSERT INTO records (dataset_id, payload) VALUES ('{ds}', '{{}}'), ('{ds}', '[]')", "inserted row 2: payload must be a JSON object"),
    ("INSERT INTO records (dataset_id, properties) VALUES ('{ds}', '{{}}')", "inserted row 1: payload must be a JSON object, got null"),
    ("INSERT INTO records (id, dataset_id, payload) VALUES ('x', '{ds}', '{{}}')", "inserted row 1 gives id"),
    ("INSERT INTO records SELECT * FROM records", "gives id, created_at, updated_at, source, sync_state"),
]

REFUSED_STATEMENTS = [
    ("UPDATE mirror SET properties = '{{}}'", "UPDATE mirror is refused"),
    ("UPDATE sqlite_master SET sql = ''", "SQL error: table sqlite_master may not be modified"),
    ("ALTER TABLE mirror ADD COLUMN x", "ALTER TABLE"),
    ("WITH x AS (SELECT 1) DELETE FROM mirror", "DELETE FROM mirror is refused"),
    ("DELETE FROM changes", "DELETE FROM changes is refused"),
    ("UPDATE working SET state = 'pending'", "UPDATE working is refused"),
    ("INSERT INTO datasets (id) VALUES ('x')", "INSERT INTO datasets is refused"),
    ("UPDATE remote_records SET properties = '{{}}'", "the view remote_records is not writable"),
    ("DELETE FROM messages", "the view messages is not writable"),
    ("DELETE FROM temp.sql_writes", "DELETE FROM sql_writes is refused"),
    ("INSERT INTO temp.sql_writes (op, record_id) VALUES ('delete', '{a}')", "INSERT INTO sql_writes is refused"),
    ("DROP VIEW records", "changing the schema is refused"),
    ("CREATE TABLE t (x)", "changing the schema is refused"),
    ("CREATE TEMP TRIGGER t INSTEAD OF DELETE ON records BEGIN SELECT 1; END", "refused"),
    ("DROP TRIGGER temp.records_sql_update", "refused"),
    ("PRAGMA user_version = 7", "PRAGMA user_version = 7 is refused"),
    ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode = DELETE is refused"),
    ("PRAGMA wal_checkpoint", "PRAGMA wal_checkpoint is refused"),
    ("ATTACH DATABASE ':memory:' AS other", "ATTACH"),
    ("BEGIN", "TRANSACTION BEGIN is refused"),
    ("REINDEX", "REINDEX is refused"),
    ("ANALYZE", "refused"),
]


@pytest.mark.parametrize(("sql", "needle"), REFUSED_ROWS + REFUSED_STATEMENTS)
def test_refusals_are_one_line_and_change_nothing(base: Base, run: Run, sql: str, needle: str) -> None:
    names = {"a": base.ids[0], "b": base.ids[5], "conflict": base.conflict, "ds": base.ds,
             "empty": base.empty, "unknown": UNKNOWN_DATASET}
    message = run.refused("sql", "--write", sql.format(**names), needle=needle.format(**names))
    if (sql, needle) in REFUSED_STATEMENTS:
        assert "only through the `records` view" in message and "nothing was changed" in message
    else:
        assert "nothing was queued" in message


def test_reads_and_harmless_pragmas_run_with_write(run: Run) -> None:
    before = dump(run.db)
    assert run.out("sql", "--write", "SELECT count(*) FROM records") == "12\n"
    assert run.out("sql", "--write", "PRAGMA journal_mode") == "wal\n"
    assert "payload" in run.out("sql", "--write", "SELECT name FROM pragma_table_info('records')")
    assert dump(run.db) == before


def test_other_sqlite_clients_cannot_write_through_records(base: Base, run: Run) -> None:
    """The triggers are TEMP, on localstore's own connection: another client's write
    fails loudly instead of landing in a scratch table nothing applies."""
    before = dump(run.db)
    with closing(sqlite3.connect(run.db)) as conn:
        for sql in ("UPDATE records SET properties = '{}'", "DELETE FROM records",
                    f"INSERT INTO records (dataset_id, payload) VALUES ('{base.ds}', '{{}}')"):
            with pytest.raises(sqlite3.OperationalError, match="cannot modify records because it is a view"):
                conn.execute(sql)
        # the file's only triggers are the full-text index's, on the tables
        triggers = conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'").fetchall()
        assert {table for _, table in triggers} <= {"mirror", "working"}, triggers
    assert dump(run.db) == before


# ------------------------------------------------------------------ --where


def first_three(base: Base) -> str:
    return f"id IN ({ids_sql(base.ids[:3])})"


def test_set_where_dry_run_prints_the_count_and_first_ids_and_changes_nothing(base: Base, run: Run) -> None:
    before = dump(run.db)
    out = run.out("set", "--where", "sync_state = 'synced'", "label=x", "--dry-run")
    lines = out.splitlines()
    assert lines[0] == "would set label on 10 record(s):"
    assert [line.strip() for line in lines[1:]] == sorted(base.ids, key=lambda i: base.ids.index(i))[:10]
    assert dump(run.db) == before
    many = run.out("rm", "--where", "1", "--dry-run").splitlines()
    assert many[0] == "would delete 12 record(s) (the first 10):" and len(many) == 11


def test_set_and_unset_where_queue_what_set_and_unset_queue(base: Base, run: Run, twin: Run) -> None:
    out = run.out("set", "--where", first_three(base), "label=apology", "score=0.5")
    assert out == "queued changes for 3 record(s): properties 3\n"
    for rid in base.ids[:3]:
        twin.out("set", rid, "label=apology", "score=0.5")
    known = known_ids(run.db)
    assert queued_state(run.db, known) == queued_state(twin.db, known)
    # unset: records without the key are left as they are (and counted)
    run.out("unset", base.pending, "score")
    twin.out("unset", base.pending, "score")
    out = run.out("unset", "--where", "json_extract(properties, '$.label') IN ('apology', 'pending')", "score")
    assert out == "queued changes for 3 record(s): properties 3; 1 unchanged\n"
    for rid in base.ids[:3]:
        twin.out("unset", rid, "score")
    assert queued_state(run.db, known) == queued_state(twin.db, known)


def test_rm_where_then_revert_where_brings_the_records_back(base: Base, run: Run) -> None:
    condition = f"id IN ({ids_sql([*base.ids[:3], base.pending])})"
    before = dump(run.db)
    assert run.out("rm", "--where", condition) == (
        "queued changes for 4 record(s): delete 4; the deletes replace pending edits of 1 record(s)\n"
    )
    assert query(run.db, "SELECT count(*) FROM records")[0][0] == 8
    # the deleted records are hidden from `records`, but revert --where still finds them
    assert run.out("revert", "--where", condition, "--dry-run").startswith("would revert 4 record(s):")
    assert run.out("revert", "--where", condition) == "reverted 4 record(s)\n"
    assert query(run.db, "SELECT count(*) FROM records")[0][0] == 12
    assert dump(run.db) != before  # the pending edit went too, as with `revert RECORD_ID`
    assert run.out("revert", "--where", condition) == "no local changes to revert in the records matching --where\n"


def test_revert_all(base: Base, run: Run) -> None:
    run.out("set", base.ids[0], "label=x")
    assert run.out("revert", "--all", "--dry-run").startswith("would revert 3 record(s):")
    assert run.out("revert", "--all") == "reverted 3 record(s)\n"
    assert json.loads(run.out("status", "--json"))["pending"] == 0
    assert json.loads(run.out("status", "--json"))["conflicts"] == 0
    assert run.out("revert", "--all") == "no local changes to revert\n"


def test_where_refusals(base: Base, run: Run) -> None:
    message = run.refused("set", "--where", "1", "label=x", needle=f"record {base.conflict} has a conflict")
    assert "nothing was queued" in message and "sync_state != 'conflict'" in message
    run.refused("rm", "--where", "1", needle="has a conflict")
    run.refused("set", "--where", "no_such_column = 1", "label=x", needle="bad --where condition")
    run.refused("set", "--where", "1; DELETE FROM mirror", "label=x", needle="bad --where condition")
    run.refused("set", base.ids[0], "--where", "1", "label=x", needle="not both")
    run.refused("rm", base.ids[0], "--where", "1", needle="not both")
    run.refused("revert", base.ids[0], "--all", needle="one of RECORD_ID, --where CONDITION or --all")
    run.refused("set", base.ids[0], "label=x", "--dry-run", needle="--dry-run goes with --where")
    assert "nothing queued" in run.out("set", "--where", "0", "label=x")


# ------------------------------------------------------------------ export


def test_export_jsonl_csv_and_where(base: Base, run: Run, tmp_path: Path) -> None:
    lines = run.out("export", base.ds).splitlines()
    assert len(lines) == 12
    first = json.loads(lines[0])
    assert list(first) == ["id", "dataset_id", "created_at", "updated_at", "payload", "properties"]
    assert isinstance(first["payload"], dict) and isinstance(first["properties"], dict)
    exported = {json.loads(line)["id"]: json.loads(line) for line in lines}
    assert exported[base.pending]["properties"]["label"] == "pending"  # pending edits applied
    assert set(exported) == {*base.ids, base.pending, base.conflict}
    assert run.out("export", base.empty) == ""
    chosen = run.out("export", "--where", "json_extract(properties, '$.label') = 'pending'").splitlines()
    assert [json.loads(line)["id"] for line in chosen] == [base.pending]
    table = list(csv.reader(io.StringIO(run.out("export", base.ds, "--format", "csv"))))
    assert table[0] == ["id", "dataset_id", "created_at", "updated_at", "payload", "properties"]
    assert json.loads(table[1][4]) == first["payload"] and len(table) == 13
    done = run("export", base.ds, "-o", str(tmp_path / "out.jsonl"))
    assert done.stdout == "" and done.stderr == f"exported 12 record(s) to {tmp_path / 'out.jsonl'}\n"
    assert (tmp_path / "out.jsonl").read_text().splitlines() == lines
    run.refused("export", UNKNOWN_DATASET, needle="is not in the store")
    run.refused("export", "--where", "nope(", "-o", str(tmp_path / "bad.jsonl"), needle="bad --where condition")
    assert not (tmp_path / "bad.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bad")] == []


# ------------------------------------------------------------------ import


def test_import_lines_chat_lines_and_export_output(base: Base, run: Run, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"payload": {"messages": [{"role": "user", "content": "a"}]}, "properties": {"k": 1}}) + "\n"
        + json.dumps({"payload": {"messages": []}}) + "\n"
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "chat"}], "tools": []}) + "\n"
        + run.out("export", base.ds, "--where", f"id = '{base.ids[0]}'")
    )
    out = run.out("import", base.empty, str(source))
    assert out == f"queued 4 create(s) in dataset {base.empty}\n"
    created = [json.loads(body) for (body,) in query(
        run.db, "SELECT body FROM changes WHERE kind = 'create' AND dataset_id = ? ORDER BY id", (base.empty,))]
    assert created == [
        {"payload": {"messages": [{"role": "user", "content": "a"}]}, "properties": {"k": 1}},
        {"payload": {"messages": []}, "properties": {}},
        {"payload": {"messages": [{"role": "user", "content": "chat"}], "tools": []}, "properties": {}},
        {"payload": record(run.db, base.ids[0])[0], "properties": record(run.db, base.ids[0])[1]},
    ]
    # the export's id was ignored: a new provisional id
    assert base.ids[0] not in {r[0] for r in query(run.db, "SELECT record_id FROM working WHERE is_create = 1")}
    # stdin, and --dedupe skips what is already there (the four lines just queued)
    result = json.loads(run.out("import", base.empty, "-", "--dedupe", "--json", stdin=source.read_text()))
    assert (result["lines"], result["skipped"], result["created"]) == (4, 4, 0)


@pytest.mark.parametrize(("text", "line", "needle"), [
    ('{"payload": {}}\n{"payload": {}\n', 2, "not JSON"),
    ('{"payload": {}}\n\n[1, 2]\n', 3, "expected a JSON object, got a list"),
    ('{"payload": [1]}\n', 1, "payload must be a JSON object, got a list"),
    ('{"payload": {}, "properties": "x"}\n', 1, "properties must be a JSON object, got a string"),
    ('{"payload": {}, "propreties": {}}\n', 1, "unexpected key 'propreties'"),
    ('{"messages": "hi"}\n', 1, "messages must be a list"),
    ('{"prompt": "hi"}\n', 1, 'expected {"payload"'),
    ('{"payload": {"x": NaN}}\n', 1, "payload is not valid JSON"),
    (b'{"payload": {"x": "\xff"}}\n', 1, "not UTF-8"),
])
def test_a_bad_line_is_reported_as_file_line_and_nothing_is_queued(
    base: Base, run: Run, tmp_path: Path, text: str | bytes, line: int, needle: str
) -> None:
    source = tmp_path / "bad.jsonl"
    good = '{"payload": {"messages": []}}\n' * 3
    data = good.encode() + (text if isinstance(text, bytes) else text.encode())
    source.write_bytes(data)
    message = run.refused("import", base.ds, str(source), needle=f"{source}:{line + 3}: {needle}")
    assert message.rstrip().endswith("nothing was queued")


def test_import_refusals(base: Base, run: Run, tmp_path: Path) -> None:
    (tmp_path / "ok.jsonl").write_text('{"payload": {}}\n')
    run.refused("import", UNKNOWN_DATASET, str(tmp_path / "ok.jsonl"), needle="is not in the store")
    run.refused("import", base.ds, str(tmp_path / "missing.jsonl"), needle="does not exist")
    run.refused("import", base.ds, str(tmp_path), needle="is a directory")


# ------------------------------------------------------------------ with the server


def sdk_contents(emulator: EmulatorServer, api_key: str, dataset_id: str) -> Counter[str]:
    """The dataset's records as the official SDK lists them: (payload, properties) each."""
    pytest.importorskip("mistralai.client")
    from mistralai.client import Mistral

    found: Counter[str] = Counter()
    with Mistral(api_key=api_key, server_url=emulator.url) as sdk:
        page = 1
        while True:
            listing = sdk.beta.observability.datasets.list_records(
                dataset_id=dataset_id, page=page, page_size=100
            ).records
            found.update(canonical([dict(r.payload), dict(r.properties)]) for r in listing.results)
            if not listing.next or not listing.results:
                return found
            page += 1


@pytest.fixture
def online(emulator: EmulatorServer, api_key: str, tmp_path: Path) -> Iterator[Run]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALSTORE_", "MISTRAL_"))}
    env.update(MISTRAL_API_KEY=api_key, LOCALSTORE_SERVER_URL=emulator.url)
    yield Run(tmp_path / "online.db", env)


@pytest.mark.slow
def test_round_trip_export_import_sync(emulator: EmulatorServer, api_key: str, online: Run, tmp_path: Path) -> None:
    source = seed_dataset(emulator.state, 25, name="bulk-round-trip-from", seed=3)
    target = seed_dataset(emulator.state, 0, name="bulk-round-trip-to")
    online.out("pull", source, target)
    # an edit made with SQL is part of what is exported
    online.out("sql", "--write", "UPDATE records SET properties = json_set(properties, '$.exported', json('true')) "
               f"WHERE dataset_id = '{source}'")
    online.out("export", source, "-o", str(tmp_path / "source.jsonl"))
    online.out("import", target, str(tmp_path / "source.jsonl"))
    report = json.loads(online.out("sync", "--json"))
    assert (report["created"], report["updated"], report["exit_code"]) == (25, 25, 0)
    from_server = sdk_contents(emulator, api_key, source)
    assert sdk_contents(emulator, api_key, target) == from_server
    assert sum(from_server.values()) == 25
    assert all('"exported":true' in key for key in from_server)
    assert json.loads(online.out("status", "--json"))["pending"] == 0


def test_a_teammates_change_to_a_key_an_sql_update_changed_is_a_conflict_as_after_set(
    emulator: EmulatorServer, api_key: str, online: Run
) -> None:
    pytest.importorskip("mistralai.client")
    from mistralai.client import Mistral

    ds = seed_dataset(emulator.state, 4, name="bulk-conflict", seed=5)
    online.out("pull", ds)
    by_sql, by_set, untouched_key, _ = [r[0] for r in query(online.db, "SELECT id FROM records ORDER BY id")]
    online.out("sql", "--write", "UPDATE records SET properties = json_set(properties, '$.label', 'ours') "
               f"WHERE id IN ('{by_sql}', '{untouched_key}')")
    online.out("set", by_set, "label=ours")
    with Mistral(api_key=api_key, server_url=emulator.url) as sdk:
        for rid in (by_sql, by_set, untouched_key):
            current = sdk.beta.observability.datasets.records.fetch(dataset_record_id=rid)
            key = "reviewer" if rid == untouched_key else "label"
            sdk.beta.observability.datasets.records.update_properties(
                dataset_record_id=rid, properties={**current.properties, key: "theirs"}
            )
    online("sync", code=3)
    conflicts = {c["record_id"]: c["parts"] for c in json.loads(online.out("conflicts", "--json"))}
    assert conflicts == {by_sql: ["/properties/label"], by_set: ["/properties/label"]}
    # the other key merged: both changes are on the server
    with Mistral(api_key=api_key, server_url=emulator.url) as sdk:
        merged = sdk.beta.observability.datasets.records.fetch(dataset_record_id=untouched_key).properties
    assert (merged["label"], merged["reviewer"]) == ("ours", "theirs")
