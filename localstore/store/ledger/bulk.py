"""Set-based transitions of the change log's owner: many records in a few statements.

This module is part of the owner of local record state (with :mod:`localstore.store.ledger`),
and the only other module that writes ``working`` and ``changes``. Each function here is,
row for row, the same transition as a loop of its per-record counterpart in one
transaction — :func:`edit_many` is :func:`ledger.edit`, :func:`delete_many` is
:func:`ledger.delete`, :func:`create_many` is :func:`ledger.create` — with the same base
rules, coalescing, refusals (the first refused record in input order raises the very
error ``ledger`` raises), and the same change-log entries — in the same order for each
record; across records, edits and deletes are logged in record id order (creates in
input order). tests/test_ledger_bulk.py
proves it on random stores with hypothesis.

Why a second module: a loop of per-record transitions costs ~10 statements per record
(0.1 s per thousand); a curator's "label every record where…" touches 100,000. Here the
intended rows go into a TEMP scratch table (``ledger_bulk_rows``, private to the
connection and never in the file) and a fixed number of set-based statements apply them.
Values are compared as ``ledger.edit`` compares them (:func:`localstore.core.jsonvalue.json_equal`):
a row whose value does not change queues nothing.

Everything runs inside the caller's transaction; on an exception the caller rolls back.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from localstore.core.ids import new_provisional_id
from localstore.core.jsonvalue import json_equal
from localstore.core.timestamps import now_ts
from localstore.errors import NotFoundLocally
from localstore.store import ledger
from localstore.store.jsontext import canonical, loads

PARTS = ("payload", "properties")
CHUNK = 2000  # rows per executemany

_SCRATCH = "temp.ledger_bulk_rows"
_SCRATCH_DDL = """CREATE TEMP TABLE IF NOT EXISTS ledger_bulk_rows (
    seq        INTEGER PRIMARY KEY,   -- input order
    rid        TEXT NOT NULL UNIQUE,
    payload    TEXT,                  -- the new value of a part that changes (canonical)
    properties TEXT,
    route      TEXT,                  -- 'create': an unsent create; 'part': an entry per part
    had        INTEGER,               -- route 'part': the record had a working copy already
    body       TEXT                   -- route 'create': its new create body
)"""


@dataclass
class Queued:
    """What one bulk transition queued: change-log entries by kind, the records they
    belong to, and the rows that asked for nothing new."""

    records: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    unchanged: int = 0
    dropped_creates: int = 0  # deletes of creates never sent: dropped, nothing to send
    replaced_edits: int = 0  # deletes that replaced a pending edit of the record
    created_ids: list[str] = field(default_factory=list)

    def add(self, other: Queued) -> None:
        self.records += other.records
        for kind, n in other.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + n
        self.unchanged += other.unchanged
        self.dropped_creates += other.dropped_creates
        self.replaced_edits += other.replaced_edits
        self.created_ids.extend(other.created_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "queued": dict(self.by_kind),
            "unchanged": self.unchanged,
            "dropped_creates": self.dropped_creates,
            "replaced_edits": self.replaced_edits,
            "created_ids": list(self.created_ids),
        }


# ------------------------------------------------------------------ scratch


def _reset(conn: sqlite3.Connection) -> None:
    conn.execute(_SCRATCH_DDL)
    conn.execute(f"DELETE FROM {_SCRATCH}")


def _chunks(rows: Iterable[tuple[Any, ...]], size: int = CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _fill(conn: sqlite3.Connection, columns: str, rows: Iterable[tuple[Any, ...]]) -> None:
    marks = ", ".join("?" * (len(columns.split(",")) + 1))
    sql = f"INSERT INTO {_SCRATCH} (seq, {columns}) VALUES ({marks})"
    seq = 0
    for batch in _chunks(rows):
        try:
            conn.executemany(sql, ((seq + i, *row) for i, row in enumerate(batch)))
        except sqlite3.IntegrityError:
            raise ValueError("a bulk transition takes each record at most once") from None
        seq += len(batch)


def _refuse(conn: sqlite3.Connection) -> None:
    """The first row (in input order) that ``ledger.edit``/``ledger.delete`` would refuse
    raises that transition's own error: not in the store, in conflict, deleted locally."""
    row = conn.execute(
        f"""SELECT b.rid FROM {_SCRATCH} AS b
            LEFT JOIN working AS w ON w.record_id = b.rid
            LEFT JOIN mirror AS m ON m.id = b.rid
            WHERE (w.record_id IS NULL AND (m.id IS NULL OR m.deleted_at IS NOT NULL))
               OR w.state = 'conflict' OR w.deleted = 1
            ORDER BY b.seq LIMIT 1"""
    ).fetchone()
    if row is not None:
        ledger.current(conn, row[0])  # raises the per-record transition's error
        raise AssertionError(f"ledger.current accepted {row[0]}, which the bulk check refused")


def _route(conn: sqlite3.Connection) -> None:
    """'create': a create not sent yet (edits fold into its create entry); 'part': a
    mirrored record or a create in flight (an entry per part, a base per part)."""
    conn.execute(
        f"""UPDATE {_SCRATCH} SET
                route = CASE
                    WHEN EXISTS (SELECT 1 FROM working AS w WHERE w.record_id = rid AND w.is_create = 1)
                     AND NOT EXISTS (SELECT 1 FROM changes AS c WHERE c.record_id = rid
                                     AND c.kind = 'create' AND c.state = 'in_flight')
                    THEN 'create' ELSE 'part' END,
                had = EXISTS (SELECT 1 FROM working AS w WHERE w.record_id = rid)"""
    )


def _new_working(conn: sqlite3.Connection, now: str, *, with_parts: bool) -> None:
    """ledger._ensure_working for every 'part' row without a working copy: the base of
    each part is the mirror's. ``with_parts``: the new values too (what ``_refresh_base``
    then the part's UPDATE give a fresh copy, in one statement). In record id order: the
    primary key index grows at its end."""
    parts = "b.payload, b.properties" if with_parts else "NULL, NULL"
    conn.execute(
        f"""INSERT INTO working (record_id, dataset_id, payload, properties, base_payload,
                                 base_payload_at, base_properties, base_properties_at, created_at)
            SELECT m.id, m.dataset_id, {parts}, m.payload, m.updated_at, m.properties, m.updated_at, ?
            FROM {_SCRATCH} AS b JOIN mirror AS m ON m.id = b.rid
            WHERE b.route = 'part' AND b.had = 0
            ORDER BY b.rid""",
        (now,),
    )


def _refresh_base(conn: sqlite3.Connection, part: str, only_changed: bool) -> None:
    """ledger._refresh_base (without ``seen``) for records that had a working copy: a
    part not edited locally takes the mirror's value (and its updated_at) as its base."""
    changed = f"AND b.{part} IS NOT NULL" if only_changed else ""
    conn.execute(
        f"""UPDATE working SET base_{part} = m.{part}, base_{part}_at = m.updated_at
            FROM {_SCRATCH} AS b JOIN mirror AS m ON m.id = b.rid
            WHERE b.rid = working.record_id AND b.route = 'part' AND b.had = 1 {changed}
              AND working.{part} IS NULL"""
    )


def _count(conn: sqlite3.Connection, where: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {_SCRATCH} AS b WHERE {where}").fetchone()[0])


# ------------------------------------------------------------------ values


def _loads(text: str) -> Any:
    try:
        return loads(text)
    except ValueError:  # stored by the standard library's path (see jsonutil.canonical)
        return json.loads(text)


def _same(new_text: str, new_value: Any, current_text: str) -> bool:
    """``json_equal(new, current)``, fast: canonical texts first; then Python's ``==``,
    which every JSON-equal pair satisfies (it only also equates ``1`` and ``true``)."""
    if new_text == current_text:
        return True
    current = _loads(current_text)
    if new_value != current:
        return False
    return json_equal(new_value, current)


# ------------------------------------------------------------------ edits


def edit_many(
    conn: sqlite3.Connection,
    rows: Iterable[tuple[str, dict[str, Any] | None, dict[str, Any] | None]],
) -> Queued:
    """``ledger.edit(conn, rid, payload, properties)`` for each ``(rid, payload,
    properties)`` (None: that part is not replaced), records given once each. Rows are
    streamed into the scratch table; values are canonicalised as they arrive."""
    _reset(conn)
    _fill(
        conn,
        "rid, payload, properties",
        (
            (rid, None if payload is None else canonical(payload),
             None if properties is None else canonical(properties))
            for rid, payload, properties in rows
        ),
    )
    _refuse(conn)
    unchanged = _drop_unchanged(conn)
    queued = Queued(unchanged=unchanged)
    if not _count(conn, "1"):
        return queued
    now = now_ts()
    _route(conn)

    # creates not sent yet: the new values fold into their single create entry
    conn.execute(
        f"""UPDATE working SET payload = COALESCE(b.payload, working.payload),
                               properties = COALESCE(b.properties, working.properties)
            FROM {_SCRATCH} AS b WHERE b.rid = working.record_id AND b.route = 'create'"""
    )
    bodies = [
        (canonical({"payload": json.loads(p), "properties": json.loads(q)}), seq)
        for seq, p, q in conn.execute(
            f"""SELECT b.seq, w.payload, w.properties FROM {_SCRATCH} AS b
                JOIN working AS w ON w.record_id = b.rid WHERE b.route = 'create'"""
        ).fetchall()
    ]
    conn.executemany(f"UPDATE {_SCRATCH} SET body = ? WHERE seq = ?", bodies)
    conn.execute(
        f"""UPDATE changes SET state = 'superseded'
            WHERE state = 'pending' AND kind = 'create'
              AND record_id IN (SELECT rid FROM {_SCRATCH} WHERE route = 'create')"""
    )

    # mirrored records and creates in flight: a working copy, a base per part, an entry per part
    _new_working(conn, now, with_parts=True)
    for part in PARTS:
        _refresh_base(conn, part, only_changed=True)
        conn.execute(
            f"""UPDATE working SET {part} = b.{part} FROM {_SCRATCH} AS b
                WHERE b.rid = working.record_id AND b.route = 'part' AND b.had = 1
                  AND b.{part} IS NOT NULL"""
        )
        # pending entries exist only beside a working copy (ledger drops idle copies only)
        conn.execute(
            f"""UPDATE changes SET state = 'superseded'
                WHERE state = 'pending' AND kind = '{part}' AND record_id IN (
                    SELECT rid FROM {_SCRATCH} WHERE route = 'part' AND had = 1 AND {part} IS NOT NULL)"""
        )

    # the log, per record in the order ledger.edit writes it (create, or payload then
    # properties), records in id order: the changes_by_record index then grows in
    # order instead of at random (3x faster on 100,000 records)
    branches = {
        "create": (0, "'create'", "b.body", "NULL", "b.route = 'create'"),
        "payload": (1, "'payload'", "b.payload", "w.base_payload_at", "b.route = 'part' AND b.payload IS NOT NULL"),
        "properties": (2, "'properties'", "b.properties", "w.base_properties_at",
                       "b.route = 'part' AND b.properties IS NOT NULL"),
    }
    selects = []
    for kind, (order, name, body, base_at, where) in branches.items():
        if n := _count(conn, where):
            queued.by_kind[kind] = n
            selects.append(
                f"""SELECT b.seq AS seq, {order} AS ord, b.rid AS rid, w.dataset_id AS dataset_id,
                           {name} AS kind, {body} AS body, {base_at} AS base_at
                    FROM {_SCRATCH} AS b JOIN working AS w ON w.record_id = b.rid WHERE {where}"""
            )
    # one kind (the usual bulk edit) is read in the order of the scratch's rid index: no sort
    source = " UNION ALL ".join(selects) if len(selects) > 1 else selects[0] + " ORDER BY b.rid"
    conn.execute(
        f"""INSERT INTO changes (record_id, dataset_id, kind, body, base_updated_at, created_at)
            SELECT rid, dataset_id, kind, body, base_at, ? FROM ({source})
            {"ORDER BY rid, ord" if len(selects) > 1 else ""}""",
        (now,),
    )
    queued.records = _count(conn, "1")
    conn.execute(f"DELETE FROM {_SCRATCH}")
    return queued


def _drop_unchanged(conn: sqlite3.Connection) -> int:
    """Parts equal (as JSON) to what the record shows now are not replaced; rows left
    with nothing to replace go. Returns how many rows went."""
    same: dict[str, list[tuple[int]]] = {part: [] for part in PARTS}
    cursor = conn.execute(
        f"""SELECT b.seq, b.payload, CASE WHEN b.payload IS NOT NULL THEN COALESCE(w.payload, m.payload) END,
                   b.properties, CASE WHEN b.properties IS NOT NULL THEN COALESCE(w.properties, m.properties) END
            FROM {_SCRATCH} AS b
            LEFT JOIN working AS w ON w.record_id = b.rid
            LEFT JOIN mirror AS m ON m.id = b.rid"""
    )
    while batch := cursor.fetchmany(CHUNK):
        for seq, new_p, cur_p, new_q, cur_q in batch:
            if new_p is not None and _same(new_p, _loads(new_p), cur_p):
                same["payload"].append((seq,))
            if new_q is not None and _same(new_q, _loads(new_q), cur_q):
                same["properties"].append((seq,))
    for part, seqs in same.items():
        conn.executemany(f"UPDATE {_SCRATCH} SET {part} = NULL WHERE seq = ?", seqs)
    return conn.execute(
        f"DELETE FROM {_SCRATCH} WHERE payload IS NULL AND properties IS NULL"
    ).rowcount


# ------------------------------------------------------------------ deletes


def delete_many(conn: sqlite3.Connection, rids: Iterable[str]) -> Queued:
    """``ledger.delete(conn, rid)`` for each record (given once each)."""
    _reset(conn)
    _fill(conn, "rid", ((rid,) for rid in rids))
    _refuse(conn)
    queued = Queued()
    total = _count(conn, "1")
    if not total:
        return queued
    now = now_ts()
    _route(conn)

    # creates never sent are simply dropped
    queued.dropped_creates = _count(conn, "route = 'create'")
    if queued.dropped_creates:
        conn.execute(
            f"""UPDATE changes SET state = 'reverted', error = 'deleted before it was sent'
                WHERE state = 'pending'
                  AND record_id IN (SELECT rid FROM {_SCRATCH} WHERE route = 'create')"""
        )
        conn.execute(
            f"DELETE FROM working WHERE record_id IN (SELECT rid FROM {_SCRATCH} WHERE route = 'create')"
        )

    queued.replaced_edits = int(conn.execute(
        f"""SELECT count(DISTINCT record_id) FROM changes
            WHERE state = 'pending' AND kind IN ('payload', 'properties')
              AND record_id IN (SELECT rid FROM {_SCRATCH} WHERE route = 'part')"""
    ).fetchone()[0])
    _new_working(conn, now, with_parts=False)
    for part in PARTS:
        _refresh_base(conn, part, only_changed=False)
    conn.execute(
        f"""UPDATE changes SET state = 'superseded', error = 'replaced by a delete'
            WHERE state = 'pending' AND kind IN ('payload', 'properties')
              AND record_id IN (SELECT rid FROM {_SCRATCH} WHERE route = 'part')"""
    )
    # a part being sent keeps its local value until its outcome is known (creates keep both)
    keep = """working.is_create = 1 OR EXISTS (SELECT 1 FROM changes AS c
              WHERE c.record_id = working.record_id AND c.kind = '{part}' AND c.state = 'in_flight')"""
    conn.execute(
        f"""UPDATE working SET deleted = 1,
                payload = CASE WHEN {keep.format(part='payload')} THEN payload END,
                properties = CASE WHEN {keep.format(part='properties')} THEN properties END
            WHERE record_id IN (SELECT rid FROM {_SCRATCH} WHERE route = 'part')"""
    )
    conn.execute(
        f"""INSERT INTO changes (record_id, dataset_id, kind, body, base_updated_at, created_at)
            SELECT b.rid, w.dataset_id, 'delete', NULL, m.updated_at, ?
            FROM {_SCRATCH} AS b JOIN working AS w ON w.record_id = b.rid
            LEFT JOIN mirror AS m ON m.id = b.rid
            WHERE b.route = 'part' ORDER BY b.rid""",
        (now,),
    )
    deleted = total - queued.dropped_creates
    queued.records = total
    if deleted:
        queued.by_kind["delete"] = deleted
    conn.execute(f"DELETE FROM {_SCRATCH}")
    return queued


# ------------------------------------------------------------------ creates


def create_many(
    conn: sqlite3.Connection,
    rows: Iterable[tuple[str, dict[str, Any], dict[str, Any]]],
) -> Queued:
    """``ledger.create(conn, dataset_id, payload, properties)`` for each row, in order,
    streamed: each create gets a provisional id (``created_ids``, in input order)."""
    queued = Queued()
    known: set[str] = set()

    def prepared() -> Iterator[tuple[str, str, str, str, str, str]]:
        for dataset_id, payload, properties in rows:
            if dataset_id not in known:
                if conn.execute("SELECT 1 FROM datasets WHERE id = ?", (dataset_id,)).fetchone() is None:
                    raise NotFoundLocally(
                        f"dataset {dataset_id} is not in the store; run `localstore pull {dataset_id}` first"
                    )
                known.add(dataset_id)
            yield (
                new_provisional_id(), dataset_id, canonical(payload), canonical(properties),
                canonical({"payload": payload, "properties": properties}), now_ts(),
            )

    for batch in _chunks(prepared()):
        conn.executemany(
            """INSERT INTO working (record_id, dataset_id, payload, properties, is_create, created_at)
               VALUES (?, ?, ?, ?, 1, ?)""",
            [(rid, ds, p, q, at) for rid, ds, p, q, _, at in batch],
        )
        conn.executemany(
            """INSERT INTO changes (record_id, dataset_id, kind, body, base_updated_at, created_at)
               VALUES (?, ?, 'create', ?, NULL, ?)""",
            [(rid, ds, body, at) for rid, ds, _, _, body, at in batch],
        )
        queued.created_ids.extend(row[0] for row in batch)
    queued.records = len(queued.created_ids)
    if queued.records:
        queued.by_kind["create"] = queued.records
    return queued
