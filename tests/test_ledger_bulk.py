"""The set-based transitions (localstore.store.ledger.bulk) are the per-record ones, row for row.

Random stores — plain records, pending edits of either part, parts being sent, pending
deletes, conflicts, pending creates, creates in flight, mirrors that moved on since an
edit — get a random bulk edit, delete or create, applied through ``ledger_bulk`` on one
copy and through a loop of ``ledger.edit``/``delete``/``create`` on another copy of the
same store, each in one transaction. Both must leave the same ``working`` rows and the
same ``changes`` rows (in the same order for each record; ids, timestamps and
provisional ids aside), or
both must refuse with the same error and leave the store as it was.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from localstore.core.record import Record
from localstore.errors import LocalstoreError
from localstore.store import ledger
from localstore.store.db import _split_sql, schema_sql
from localstore.store.ledger import bulk as ledger_bulk
from localstore.store.mirror import set_mirror_content, upsert_mirror_rows

DATASETS = ["00000000-0000-4000-8000-00000000d001", "00000000-0000-4000-8000-00000000d002"]
UNKNOWN_DATASET = "00000000-0000-4000-8000-00000000dfff"
UNKNOWN_RECORD = "00000000-0000-4000-8000-0000000000ff"

# Small pools, so that "the same value" (and 1 == 1.0, 1 != true) happens often.
PAYLOADS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "sorry"}]},
    {"messages": [], "n": 1},
    {"messages": [], "n": 1.0},
    {"messages": [], "n": True},
]
PROPERTIES: list[dict[str, Any]] = [
    {},
    {"label": "a"},
    {"label": "b"},
    {"label": "a", "score": 1},
    {"score": 1.0, "label": "a"},
    {"label": "a", "score": True},
    {"nested": {"x": [1, 2]}},
]

payloads = st.sampled_from(PAYLOADS)
properties = st.sampled_from(PROPERTIES)




def new_conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for statement in _split_sql(schema_sql()):
        if not statement.upper().startswith("CREATE TEMP"):
            conn.execute(statement)
    for ds in DATASETS:
        conn.execute("INSERT INTO datasets (id) VALUES (?)", (ds,))
    return conn


def copy_of(conn: sqlite3.Connection) -> sqlite3.Connection:
    other = sqlite3.connect(":memory:", isolation_level=None)
    conn.backup(other)
    return other


# ------------------------------------------------------------------ random stores


Step = Callable[[sqlite3.Connection, list[str]], None]


def _work(conn: sqlite3.Connection, rid: str) -> ledger.LocalWork | None:
    works = ledger.load_work(conn, [rid])
    return works[0] if works else None


@st.composite
def steps(draw: st.DrawFn) -> Step:
    """One thing that happened to the store before the bulk edit."""
    kind = draw(st.sampled_from(
        ["edit", "edit", "edit", "delete", "create", "create", "send_create", "send_parts",
         "conflict", "remote_moved", "remote_moved", "remote_moved", "revert", "push_rejected"]
    ))
    pick = draw(st.integers(0, 1_000))
    payload = draw(st.none() | payloads)
    props = draw(st.none() | properties)
    stamp = f"2026-02-0{draw(st.integers(1, 9))}T00:00:00.000Z"

    def step(conn: sqlite3.Connection, ids: list[str]) -> None:
        rid = ids[pick % len(ids)]
        works = ledger.load_work(conn)
        creates = [w for w in works if w.kind == "create"]
        edited = [w for w in works if w.kind == "edit"]
        with_work = [r[0] for r in conn.execute(
            "SELECT w.record_id FROM working AS w JOIN mirror AS m ON m.id = w.record_id ORDER BY 1"
        )]
        try:
            if kind == "edit":
                ledger.edit(conn, rid, payload, props)
            elif kind == "delete":
                ledger.delete(conn, rid)
            elif kind == "create":
                ids.append(ledger.create(conn, DATASETS[pick % 2], payload or PAYLOADS[0], props or {}))
            elif kind == "send_create" and creates:
                ledger.begin_create(conn, creates[pick % len(creates)])
            elif kind in ("send_parts", "push_rejected") and edited:
                work = edited[pick % len(edited)]
                send = {p: getattr(work, p) for p in ledger.PARTS if getattr(work, p) is not None}
                if send:
                    flight = ledger.begin_push(conn, work, send)
                    if flight is not None and kind == "push_rejected":
                        ledger.push_done(conn, flight, dict.fromkeys(send, "rejected"))
            elif kind == "conflict" and (edited or works):
                work = (edited or works)[pick % len(edited or works)]
                if work.kind != "create":
                    ledger.conflict(conn, work, ["/payload"])
            elif kind == "remote_moved":
                target = with_work[pick % len(with_work)] if with_work and pick % 3 else rid
                if conn.execute("SELECT 1 FROM mirror WHERE id = ?", (target,)).fetchone():
                    set_mirror_content(conn, target, stamp, payload or PAYLOADS[1], props or {"moved": 1})
            elif kind == "revert":
                ledger.revert(conn, rid)
        except LocalstoreError:
            pass  # not possible in this state: the store is unchanged

    return step


@st.composite
def stores(draw: st.DrawFn) -> tuple[sqlite3.Connection, list[str]]:
    conn = new_conn()
    n = draw(st.integers(1, 6))
    records = [
        Record(f"00000000-0000-4000-8000-{i:012x}", DATASETS[i % 2], "2026-01-01T00:00:00.000Z",
            f"2026-01-0{1 + i % 9}T00:00:00.000Z", None, "DIRECT_INPUT",
            draw(payloads), draw(properties))
        for i in range(1, n + 1)
    ]
    upsert_mirror_rows(conn, records)
    if draw(st.booleans()):  # a record the server deleted while it had no local work
        conn.execute("UPDATE mirror SET deleted_at = updated_at WHERE id = ?", (records[-1].id,))
    ids = [r.id for r in records]
    for step in draw(st.lists(steps(), max_size=14)):
        conn.execute("BEGIN")
        step(conn, ids)
        conn.execute("COMMIT")
    if draw(st.integers(0, 3)) == 0:
        ids.append(UNKNOWN_RECORD)  # not in the store: refused
    return conn, ids


# ------------------------------------------------------------------ comparing


def snapshot(conn: sqlite3.Connection, known: set[str]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """working and changes, ids and timestamps aside; new provisional ids numbered in
    the order their create entries were logged."""
    names: dict[str, str] = {}
    for (rid,) in conn.execute("SELECT record_id FROM changes ORDER BY id"):
        if rid not in known and rid not in names:
            names[rid] = f"new-{len(names)}"

    def name(rid: str) -> str:
        return names.get(rid, rid)

    working = sorted(
        (name(r[0]), *r[1:])
        for r in conn.execute(
            """SELECT record_id, dataset_id, payload, properties, deleted, is_create, base_payload,
                      base_payload_at, base_properties, base_properties_at, state, conflict_parts
               FROM working"""
        )
    )
    # per record in log order; across records, bulk edits and deletes log in record id order
    changes = sorted(
        ((name(r[0]), r[1]), *r[2:])
        for r in conn.execute(
            """SELECT record_id, id, dataset_id, kind, body, base_updated_at, state, error, pushed_at, sent
               FROM changes ORDER BY id"""
        )
    )
    changes = [(record, *rest) for (record, _), *rest in changes]
    return working, changes


def run(conn: sqlite3.Connection, action: Callable[[sqlite3.Connection], Any]) -> tuple[str, str] | None:
    """The action in one transaction; its error (type, message) if it refused."""
    conn.execute("BEGIN")
    try:
        action(conn)
    except LocalstoreError as exc:
        conn.execute("ROLLBACK")
        return type(exc).__name__, str(exc)
    conn.execute("COMMIT")
    return None


def assert_equivalent(
    base: sqlite3.Connection,
    ids: list[str],
    bulk: Callable[[sqlite3.Connection], Any],
    loop: Callable[[sqlite3.Connection], Any],
) -> None:
    known = {r[0] for r in base.execute("SELECT record_id FROM changes UNION SELECT record_id FROM working")}
    known |= set(ids)
    before = snapshot(base, known)
    a, b = copy_of(base), copy_of(base)
    refused_bulk = run(a, bulk)
    refused_loop = run(b, loop)
    assert refused_bulk == refused_loop
    event("refused" if refused_bulk else "applied")
    if refused_bulk is None:
        for (kind,) in base.execute("SELECT DISTINCT kind FROM changes WHERE state = 'in_flight'"):
            event(f"applied to a store with a {kind} in flight")
        if base.execute(
            "SELECT 1 FROM working AS w JOIN mirror AS m ON m.id = w.record_id "
            "WHERE w.base_properties_at != m.updated_at OR w.base_payload_at != m.updated_at"
        ).fetchone():
            event("applied to a store whose mirror moved on since an edit")
    if refused_bulk is None:
        for state, kind in a.execute(
            "SELECT DISTINCT w.state || CASE WHEN w.is_create THEN '/create' ELSE '' END, c.kind "
            "FROM changes AS c JOIN working AS w ON w.record_id = c.record_id WHERE c.state = 'pending'"
        ):
            event(f"after: pending {kind} of a {state} record")
    assert snapshot(a, known) == snapshot(b, known)
    if refused_bulk is not None:
        assert snapshot(a, known) == before


# ------------------------------------------------------------------ the properties

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def edit_rows(draw: st.DrawFn, ids: list[str]) -> list[tuple[str, Any, Any]]:
    chosen = draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)))
    return [(rid, draw(st.none() | payloads), draw(st.none() | properties)) for rid in chosen]


@pytest.mark.slow
@SETTINGS
@given(data=st.data(), store=stores())
def test_edit_many_is_a_loop_of_edit(data: st.DataObject, store: tuple[sqlite3.Connection, list[str]]) -> None:
    conn, ids = store
    rows = data.draw(edit_rows(ids))

    def loop(c: sqlite3.Connection) -> None:
        for rid, payload, props in rows:
            ledger.edit(c, rid, payload, props)

    assert_equivalent(conn, ids, lambda c: ledger_bulk.edit_many(c, rows), loop)


@pytest.mark.slow
@SETTINGS
@given(data=st.data(), store=stores())
def test_delete_many_is_a_loop_of_delete(data: st.DataObject, store: tuple[sqlite3.Connection, list[str]]) -> None:
    conn, ids = store
    chosen = data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)))

    def loop(c: sqlite3.Connection) -> None:
        for rid in chosen:
            ledger.delete(c, rid)

    assert_equivalent(conn, ids, lambda c: ledger_bulk.delete_many(c, chosen), loop)


@pytest.mark.slow
@SETTINGS
@given(data=st.data(), store=stores())
def test_create_many_is_a_loop_of_create(data: st.DataObject, store: tuple[sqlite3.Connection, list[str]]) -> None:
    conn, ids = store
    rows = data.draw(st.lists(
        st.tuples(st.sampled_from([*DATASETS, UNKNOWN_DATASET]), payloads, properties), max_size=5
    ))

    def loop(c: sqlite3.Connection) -> None:
        for ds, payload, props in rows:
            ledger.create(c, ds, payload, props)

    assert_equivalent(conn, ids, lambda c: ledger_bulk.create_many(c, rows), loop)


# ------------------------------------------------------------------ what a bulk edit reports


@pytest.fixture
def small() -> Iterator[sqlite3.Connection]:
    conn = new_conn()
    upsert_mirror_rows(conn, [
        Record(f"00000000-0000-4000-8000-{i:012x}", DATASETS[0], "2026-01-01T00:00:00.000Z",
            "2026-01-01T00:00:00.000Z", None, "DIRECT_INPUT", PAYLOADS[0], {"label": "a", "score": 1})
        for i in range(1, 5)
    ])
    yield conn
    conn.close()


def test_counts_by_kind_and_unchanged(small: sqlite3.Connection) -> None:
    ids = [r[0] for r in small.execute("SELECT id FROM mirror ORDER BY id")]
    created = ledger_bulk.create_many(small, [(DATASETS[0], PAYLOADS[2], {})])
    rows = [
        (ids[0], None, {"label": "b", "score": 1}),      # properties
        (ids[1], None, {"score": 1.0, "label": "a"}),    # the same value: nothing
        (ids[2], PAYLOADS[1], {"label": "c"}),           # payload and properties
        (created.created_ids[0], PAYLOADS[4], None),     # folds into the unsent create
    ]
    queued = ledger_bulk.edit_many(small, rows)
    assert (queued.records, queued.by_kind, queued.unchanged) == (
        3, {"create": 1, "payload": 1, "properties": 2}, 1
    )
    assert ledger.pending_count(small) == 3
    deleted = ledger_bulk.delete_many(small, [ids[0], ids[3], created.created_ids[0]])
    assert (deleted.by_kind, deleted.dropped_creates, deleted.replaced_edits) == ({"delete": 2}, 1, 1)


def test_a_record_given_twice_is_a_programming_error(small: sqlite3.Connection) -> None:
    rid = small.execute("SELECT id FROM mirror LIMIT 1").fetchone()[0]
    with pytest.raises(ValueError, match="at most once"):
        ledger_bulk.edit_many(small, [(rid, None, {}), (rid, None, {"x": 1})])


# ------------------------------------------------------------------ sync's batch transitions


def _mirror_rows(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM mirror ORDER BY id").fetchall()


@pytest.mark.slow
@SETTINGS
@given(data=st.data(), store=stores())
def test_begin_deletes_and_deletes_done_are_loops_of_the_single_transitions(
    data: st.DataObject, store: tuple[sqlite3.Connection, list[str]]
) -> None:
    """What sync does to a page of records it deletes — mark them in flight, then settle
    each as sent, rejected or unknown — in batches and one by one gives the same store."""
    conn, ids = store
    conn.execute("BEGIN")
    for rid in data.draw(st.lists(st.sampled_from(ids), unique=True, min_size=1)):
        with contextlib.suppress(LocalstoreError):  # not in the store
            ledger.delete(conn, rid)
    conn.execute("COMMIT")
    deleting = [w for w in ledger.load_work(conn) if w.kind == "delete"]
    chosen = data.draw(st.lists(st.sampled_from(deleting), unique_by=lambda w: w.record_id, min_size=1)) if deleting else []
    outcomes = data.draw(st.lists(
        st.tuples(st.sampled_from(["sent", "sent", "rejected", "unknown"]), st.none() | st.just("no")),
        min_size=len(chosen), max_size=len(chosen),
    ))
    event(f"{len(chosen)} deletes")
    flights: dict[str, list[ledger.InFlight]] = {}

    def bulk(c: sqlite3.Connection) -> None:
        flights["bulk"] = ledger.begin_deletes(c, chosen)
        ledger.deletes_done(c, [(f, *o) for f, o in zip(flights["bulk"], outcomes, strict=True)])  # type: ignore[misc]

    def loop(c: sqlite3.Connection) -> None:
        flights["loop"] = [ledger.begin_delete(c, w) for w in chosen]
        for flight, (outcome, message) in zip(flights["loop"], outcomes, strict=True):
            ledger.delete_done(c, flight, outcome, message)  # type: ignore[arg-type]

    a, b = copy_of(conn), copy_of(conn)
    known = set(ids)
    assert run(a, bulk) is None and run(b, loop) is None
    assert flights["bulk"] == flights["loop"]
    for c in (a, b):  # when it was pushed is a clock reading: whether it was is compared
        c.execute("UPDATE changes SET pushed_at = pushed_at IS NOT NULL")
    assert snapshot(a, known) == snapshot(b, known)
    assert _mirror_rows(a) == _mirror_rows(b)
