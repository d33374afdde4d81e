"""The ledger's vocabulary and reads: change kinds and states, what a sync holds in
flight, a record's local work as sync plans it, and the helpers every transition uses."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from localstore.core.merge import Content
from localstore.core.plan import LocalWork, Remote
from localstore.core.timestamps import now_ts
from localstore.store.jsontext import canonical

PARTS = ("payload", "properties")
CREATE_UNCONFIRMED = "create-unconfirmed"  # the conflict of a create that may have landed


class Kind(StrEnum):
    CREATE = "create"
    PAYLOAD = "payload"
    PROPERTIES = "properties"
    DELETE = "delete"


class ChangeState(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    PUSHED = "pushed"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    REVERTED = "reverted"


class RecordState(StrEnum):
    PENDING = "pending"
    CONFLICT = "conflict"


OPEN = (ChangeState.PENDING, ChangeState.IN_FLIGHT)


@dataclass(frozen=True)
class InFlight:
    """What a sync is sending for one record, captured when it was marked in flight.
    ``ids`` are the change-log entries by kind; ``sent`` the values sent by part
    (for a create: the POSTed payload and properties)."""

    record_id: str
    dataset_id: str
    ids: Mapping[str, tuple[int, ...]]
    sent: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def all_ids(self) -> tuple[int, ...]:
        return tuple(i for ids in self.ids.values() for i in ids)


PartOutcome = Literal["sent", "rejected", "unknown"]


@dataclass(frozen=True)
class DeleteResult:
    record_id: str
    dropped_unsent_create: bool = False
    dropped_edits: tuple[str, ...] = ()  # pending parts the delete replaced


# ------------------------------------------------------------------ reading


_WORK_COLUMNS = """w.record_id, w.dataset_id, w.payload, w.properties, w.deleted, w.is_create,
    w.base_payload, w.base_properties, w.base_payload_at, w.base_properties_at, w.state"""


def load_work(
    conn: sqlite3.Connection,
    record_ids: Iterable[str] | None = None,
    *,
    state: RecordState = RecordState.PENDING,
) -> list[LocalWork]:
    """Records in ``state`` with pending entries, as the pure planner sees them. A
    create already sent (in flight) is not work until its outcome is known."""
    sql = f"""SELECT {_WORK_COLUMNS},
                  (SELECT group_concat(c.id || ':' || c.kind) FROM changes AS c
                   WHERE c.record_id = w.record_id AND c.state = 'pending') AS pending,
                  EXISTS (SELECT 1 FROM changes AS c WHERE c.record_id = w.record_id
                          AND c.kind = 'create' AND c.state = 'in_flight') AS creating
             FROM working AS w WHERE w.state = ?"""
    params: list[Any] = [str(state)]
    if record_ids is not None:
        wanted = list(record_ids)
        if not wanted:
            return []
        sql += f" AND w.record_id IN ({','.join('?' * len(wanted))})"
        params.extend(wanted)
    works = []
    for row in conn.execute(sql + " ORDER BY w.dataset_id, w.record_id", params):
        (rid, ds, payload, properties, deleted, is_create, bp, bprops, bp_at, bprops_at, _,
         pending, creating) = row
        if not pending or creating:
            continue
        ids = tuple(sorted(int(item.partition(":")[0]) for item in pending.split(",")))
        if is_create:
            works.append(
                LocalWork(rid, ds, "create", json.loads(payload), json.loads(properties), None, None, ids)
            )
            continue
        works.append(
            LocalWork(
                record_id=rid,
                dataset_id=ds,
                kind="delete" if deleted else "edit",
                payload=None if payload is None or deleted else json.loads(payload),
                properties=None if properties is None or deleted else json.loads(properties),
                base=Content(json.loads(bp), json.loads(bprops)),
                base_updated_at=max((t for t in (bp_at, bprops_at) if t), default=None),
                change_ids=ids,
            )
        )
    return works


def records_to_check(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Records (not creates) with pending entries and no conflict, by dataset: what a
    sync must compare with the server before pushing."""
    out: dict[str, list[str]] = {}
    for rid, ds in conn.execute(
        """SELECT w.record_id, w.dataset_id FROM working AS w
           WHERE w.state = 'pending' AND w.is_create = 0 AND EXISTS (
               SELECT 1 FROM changes AS c WHERE c.record_id = w.record_id AND c.state = 'pending')
           ORDER BY w.dataset_id, w.record_id"""
    ):
        out.setdefault(ds, []).append(rid)
    return out


def datasets_creating(conn: sqlite3.Connection) -> set[str]:
    """Datasets with creates to send or whose answer was lost."""
    return {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT dataset_id FROM changes WHERE kind = 'create' AND state IN ('pending', 'in_flight')"
        )
    }


def creates_in_flight(
    conn: sqlite3.Connection, dataset_id: str | None = None, *, undecided_only: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """(record id, POSTed body) of creates whose outcome is not known yet, oldest first;
    ``undecided_only`` leaves out those already flagged as possibly landed."""
    sql = """SELECT c.record_id, c.body FROM changes AS c JOIN working AS w ON w.record_id = c.record_id
             WHERE c.kind = 'create' AND c.state = 'in_flight'"""
    params: tuple[Any, ...] = ()
    if dataset_id is not None:
        sql += " AND c.dataset_id = ?"
        params = (dataset_id,)
    if undecided_only:
        sql += " AND w.state = 'pending'"
    return [(rid, json.loads(body)) for rid, body in conn.execute(sql + " ORDER BY c.id", params)]


def conflict_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM working WHERE state = 'conflict'").fetchone()[0])


def pending_count(conn: sqlite3.Connection) -> int:
    """Records with changes not yet on the server (conflicts aside)."""
    return int(conn.execute(
        """SELECT count(*) FROM working AS w WHERE w.state = 'pending' AND EXISTS (
               SELECT 1 FROM changes AS c WHERE c.record_id = w.record_id
               AND c.state IN ('pending', 'in_flight'))"""
    ).fetchone()[0])


def remote_of_mirror(conn: sqlite3.Connection, rid: str) -> Remote | None:
    """The mirror's view of a record (None: not there, or a tombstone)."""
    row = conn.execute(
        "SELECT updated_at, deleted_at, payload, properties FROM mirror WHERE id = ?", (rid,)
    ).fetchone()
    if row is None or row[1] is not None:
        return None
    return Remote(row[0], Content(json.loads(row[2]), json.loads(row[3])))


# ------------------------------------------------------------------ internals


def mark_entries(
    conn: sqlite3.Connection, ids: Iterable[int], state: ChangeState, error: str | None = None
) -> None:
    ids = list(ids)
    if not ids:
        return
    pushed_at = now_ts() if state is ChangeState.PUSHED else None
    conn.execute(
        f"""UPDATE changes SET state = ?, error = COALESCE(?, error),
                   pushed_at = COALESCE(?, pushed_at)
            WHERE id IN ({','.join('?' * len(ids))})""",
        (str(state), error, pushed_at, *ids),
    )


def close_entries(
    conn: sqlite3.Connection,
    rid: str,
    state: ChangeState,
    error: str | None = None,
    *,
    kinds: Iterable[str] | None = None,
    states: Iterable[ChangeState] = (ChangeState.PENDING,),
) -> None:
    """Move the record's entries in ``states`` (of ``kinds``, default all) to ``state``."""
    sql = "SELECT id FROM changes WHERE record_id = ?"
    params: list[Any] = [rid]
    wanted = [str(s) for s in states]
    sql += f" AND state IN ({','.join('?' * len(wanted))})"
    params.extend(wanted)
    if kinds is not None:
        kinds = list(kinds)
        sql += f" AND kind IN ({','.join('?' * len(kinds))})"
        params.extend(kinds)
    mark_entries(conn, [r[0] for r in conn.execute(sql, params)], state, error)


def log_change(
    conn: sqlite3.Connection, rid: str, dataset_id: str, kind: Kind, body: str | None, base_at: str | None
) -> int:
    cursor = conn.execute(
        """INSERT INTO changes (record_id, dataset_id, kind, body, base_updated_at, created_at)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (rid, dataset_id, str(kind), body, base_at, now_ts()),
    )
    return int(cursor.lastrowid or 0)


def open_change_kinds(conn: sqlite3.Connection, rid: str, state: ChangeState | None = None) -> set[str]:
    if state is None:
        rows = conn.execute(
            "SELECT kind FROM changes WHERE record_id = ? AND state IN ('pending', 'in_flight')", (rid,)
        )
    else:
        rows = conn.execute(
            "SELECT kind FROM changes WHERE record_id = ? AND state = ?", (rid, str(state))
        )
    return {r[0] for r in rows}


def working_row(conn: sqlite3.Connection, rid: str) -> dict[str, Any] | None:
    cursor = conn.execute(f"SELECT {_WORK_COLUMNS} FROM working AS w WHERE w.record_id = ?", (rid,))
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def drop_if_idle(conn: sqlite3.Connection, rid: str) -> None:
    """A working copy with no open entry and no local value left goes."""
    conn.execute(
        """DELETE FROM working WHERE record_id = ? AND state = 'pending'
           AND NOT EXISTS (SELECT 1 FROM changes WHERE record_id = ?
                           AND state IN ('pending', 'in_flight'))""",
        (rid, rid),
    )


def mirror_set_part(conn: sqlite3.Connection, rid: str, part: str, value: dict[str, Any]) -> None:
    """The server holds ``value`` for that part now (a PUT of ours succeeded); its new
    ``updated_at`` is learned from the next listing or GET."""
    conn.execute(f"UPDATE mirror SET {part} = ? WHERE id = ?", (canonical(value), rid))
