"""The owner of local record state: every write to the working copy (``working``) and
the change log (``changes``) is one of the named transitions below, each run inside
the caller's transaction. No other module writes those two tables.

A record's local state, in one place:

- **parts** ``payload`` and ``properties``: a local value when edited (NULL: the record
  shows the mirror's), and a **base per part** — the remote value the user saw when they
  edited that part (or deleted the record), kept until that part is settled;
- ``deleted`` (a queued delete), ``is_create`` (an offline create), ``state``
  (``pending`` or ``conflict``);
- change-log entries, one pending entry per kind at most (a newer edit supersedes the
  older one); entries a sync is sending are ``in_flight`` and their ids are captured
  then, in an :class:`InFlight`, so an outcome settles exactly what was sent.

Transitions: user edits (:func:`edit`, :func:`delete`, :func:`create`, :func:`revert`),
sync (:func:`recover`, :func:`begin_push`, :func:`push_done`, :func:`begin_delete`,
:func:`delete_done`, :func:`begin_create`, :func:`create_landed`, :func:`create_rejected`,
:func:`create_not_landed`, :func:`settle`, :func:`conflict`, :func:`remote_gone`),
and resolution (:func:`resolve_theirs`, :func:`restart`, :func:`recreate`,
:func:`narrow_conflict`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from localstore.core.ids import new_provisional_id
from localstore.core.jsonvalue import json_equal
from localstore.core.merge import Content
from localstore.core.plan import Conflict, LocalWork, Remote, Settle, plan_record
from localstore.core.timestamps import now_ts
from localstore.errors import NotFoundLocally, UsageError
from localstore.store.jsontext import canonical
from localstore.store.mirror import upsert_mirror_rows

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


def _mark(
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


def _close(
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
    _mark(conn, [r[0] for r in conn.execute(sql, params)], state, error)


def _log(
    conn: sqlite3.Connection, rid: str, dataset_id: str, kind: Kind, body: str | None, base_at: str | None
) -> int:
    cursor = conn.execute(
        """INSERT INTO changes (record_id, dataset_id, kind, body, base_updated_at, created_at)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (rid, dataset_id, str(kind), body, base_at, now_ts()),
    )
    return int(cursor.lastrowid or 0)


def _open_kinds(conn: sqlite3.Connection, rid: str, state: ChangeState | None = None) -> set[str]:
    if state is None:
        rows = conn.execute(
            "SELECT kind FROM changes WHERE record_id = ? AND state IN ('pending', 'in_flight')", (rid,)
        )
    else:
        rows = conn.execute(
            "SELECT kind FROM changes WHERE record_id = ? AND state = ?", (rid, str(state))
        )
    return {r[0] for r in rows}


def _working(conn: sqlite3.Connection, rid: str) -> dict[str, Any] | None:
    cursor = conn.execute(f"SELECT {_WORK_COLUMNS} FROM working AS w WHERE w.record_id = ?", (rid,))
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def _drop_if_idle(conn: sqlite3.Connection, rid: str) -> None:
    """A working copy with no open entry and no local value left goes."""
    conn.execute(
        """DELETE FROM working WHERE record_id = ? AND state = 'pending'
           AND NOT EXISTS (SELECT 1 FROM changes WHERE record_id = ?
                           AND state IN ('pending', 'in_flight'))""",
        (rid, rid),
    )


def _mirror_set_part(conn: sqlite3.Connection, rid: str, part: str, value: dict[str, Any]) -> None:
    """The server holds ``value`` for that part now (a PUT of ours succeeded); its new
    ``updated_at`` is learned from the next listing or GET."""
    conn.execute(f"UPDATE mirror SET {part} = ? WHERE id = ?", (canonical(value), rid))


# ------------------------------------------------------------------ user edits


@dataclass
class _View:
    """A record as the user sees it now, with its local bookkeeping."""

    record_id: str
    dataset_id: str
    payload: str
    properties: str
    mirror_updated_at: str | None
    working: dict[str, Any] | None
    creating: bool  # a create in flight

    @property
    def is_create(self) -> bool:
        return bool(self.working and self.working["is_create"])


def _view(conn: sqlite3.Connection, rid: str) -> _View:
    """Raises NotFoundLocally / UsageError when the record cannot be edited now."""
    mirror = conn.execute(
        "SELECT dataset_id, updated_at, deleted_at, payload, properties FROM mirror WHERE id = ?", (rid,)
    ).fetchone()
    working = _working(conn, rid)
    if working is None and (mirror is None or mirror[2] is not None):
        raise NotFoundLocally(f"record {rid} is not in the store; `localstore fetch {rid}` mirrors it")
    if working is not None:
        if working["state"] == RecordState.CONFLICT:
            raise UsageError(
                f"record {rid} has a conflict; settle it first with "
                f"`localstore resolve {rid} --ours|--theirs|--file F`"
            )
        if working["deleted"]:
            raise UsageError(f"record {rid} is deleted locally; `localstore revert {rid}` undoes that")
    creating = conn.execute(
        "SELECT 1 FROM changes WHERE record_id = ? AND kind = 'create' AND state = 'in_flight'", (rid,)
    ).fetchone() is not None

    def part(name: str, index: int) -> str:
        if working is not None and working[name] is not None:
            return str(working[name])
        assert mirror is not None
        return str(mirror[index])

    return _View(
        record_id=rid,
        dataset_id=working["dataset_id"] if working else mirror[0],
        payload=part("payload", 3),
        properties=part("properties", 4),
        mirror_updated_at=None if mirror is None else mirror[1],
        working=working,
        creating=creating,
    )


def current(conn: sqlite3.Connection, rid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(payload, properties) as the user sees them now; raises when not editable."""
    view = _view(conn, rid)
    return json.loads(view.payload), json.loads(view.properties)


def _ensure_working(conn: sqlite3.Connection, view: _View) -> None:
    if view.working is not None:
        return
    conn.execute(
        """INSERT INTO working (record_id, dataset_id, base_payload, base_payload_at,
                                base_properties, base_properties_at, created_at)
           SELECT id, dataset_id, payload, updated_at, properties, updated_at, ? FROM mirror WHERE id = ?""",
        (now_ts(), view.record_id),
    )
    view.working = _working(conn, view.record_id)


def _refresh_base(conn: sqlite3.Connection, rid: str, part: str, seen: Remote | None = None) -> None:
    """Part ``part`` is not edited locally: its base becomes what the user sees now (the
    mirror's value), or the version ``seen`` they worked from."""
    if seen is not None:
        conn.execute(
            f"UPDATE working SET base_{part} = ?, base_{part}_at = ? WHERE record_id = ? AND {part} IS NULL",
            (canonical(getattr(seen.content, part)), seen.updated_at, rid),
        )
        return
    conn.execute(
        f"""UPDATE working SET base_{part} = (SELECT {part} FROM mirror WHERE id = :rid),
                              base_{part}_at = (SELECT updated_at FROM mirror WHERE id = :rid)
            WHERE record_id = :rid AND {part} IS NULL
              AND EXISTS (SELECT 1 FROM mirror WHERE id = :rid)""",
        {"rid": rid},
    )


def edit(
    conn: sqlite3.Connection,
    rid: str,
    payload: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    *,
    seen: Remote | None = None,
) -> tuple[str, ...]:
    """The user replaced the payload and/or the whole properties map. Queues the parts
    whose value differs from what the record shows now; returns their kinds.

    ``seen`` is the remote version the user edited, when it is not the mirror's (a file
    written from an older version): a part not yet edited locally takes it as its base,
    so the sync's 3-way merge keeps what changed on the server since."""
    view = _view(conn, rid)
    changed: dict[str, str] = {}
    for part, value in (("payload", payload), ("properties", properties)):
        if value is not None and not json_equal(value, json.loads(getattr(view, part))):
            changed[part] = canonical(value)
    if not changed:
        return ()
    if view.is_create and not view.creating:
        for part, text in changed.items():
            conn.execute(f"UPDATE working SET {part} = ? WHERE record_id = ?", (text, rid))
        _close(conn, rid, ChangeState.SUPERSEDED, kinds=[Kind.CREATE])
        _log(conn, rid, view.dataset_id, Kind.CREATE, _create_body(conn, rid), None)
        return tuple(changed)
    _ensure_working(conn, view)
    for part, text in changed.items():
        _refresh_base(conn, rid, part, seen)
        conn.execute(f"UPDATE working SET {part} = ? WHERE record_id = ?", (text, rid))
        _close(conn, rid, ChangeState.SUPERSEDED, kinds=[part])
        base_at = conn.execute(
            f"SELECT base_{part}_at FROM working WHERE record_id = ?", (rid,)
        ).fetchone()[0]
        _log(conn, rid, view.dataset_id, Kind(part), text, base_at)
    return tuple(changed)


def _create_body(conn: sqlite3.Connection, rid: str) -> str:
    payload, properties = conn.execute(
        "SELECT payload, properties FROM working WHERE record_id = ?", (rid,)
    ).fetchone()
    return canonical({"payload": json.loads(payload), "properties": json.loads(properties)})


def create(
    conn: sqlite3.Connection, dataset_id: str, payload: dict[str, Any], properties: dict[str, Any],
    *, record_id: str | None = None,
) -> str:
    """An offline create under a new provisional id (a UUID), or under ``record_id`` when
    the caller chose it beforehand (a file's create: the id is written next to the file
    first, so a crash between the two cannot create it twice)."""
    if conn.execute("SELECT 1 FROM datasets WHERE id = ?", (dataset_id,)).fetchone() is None:
        raise NotFoundLocally(
            f"dataset {dataset_id} is not in the store; run `localstore pull {dataset_id}` first"
        )
    rid = record_id or new_provisional_id()
    conn.execute(
        """INSERT INTO working (record_id, dataset_id, payload, properties, is_create, created_at)
           VALUES (?, ?, ?, ?, 1, ?)""",
        (rid, dataset_id, canonical(payload), canonical(properties), now_ts()),
    )
    _log(conn, rid, dataset_id, Kind.CREATE, canonical({"payload": payload, "properties": properties}), None)
    return rid


def delete(conn: sqlite3.Connection, rid: str, *, seen: Remote | None = None) -> DeleteResult:
    """Queue a delete. A create never sent is simply dropped; pending edits of the
    record are replaced by the delete (they stay in the log, superseded). ``seen``: the
    remote version the user deleted, when it is not the mirror's (see :func:`edit`);
    the sync turns a delete of an older version into a delete-vs-edit conflict."""
    view = _view(conn, rid)
    if view.is_create and not view.creating:
        _close(conn, rid, ChangeState.REVERTED, "deleted before it was sent")
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        return DeleteResult(rid, dropped_unsent_create=True)
    _ensure_working(conn, view)
    in_flight = _open_kinds(conn, rid, ChangeState.IN_FLIGHT)
    dropped = tuple(k for k in PARTS if k in _open_kinds(conn, rid, ChangeState.PENDING))
    for part in PARTS:
        _refresh_base(conn, rid, part, seen)
    _close(conn, rid, ChangeState.SUPERSEDED, "replaced by a delete", kinds=PARTS)
    if not view.is_create:
        # a part being sent keeps its local value until its outcome is known
        for part in PARTS:
            if part not in in_flight:
                conn.execute(f"UPDATE working SET {part} = NULL WHERE record_id = ?", (rid,))
    conn.execute("UPDATE working SET deleted = 1 WHERE record_id = ?", (rid,))
    _log(conn, rid, view.dataset_id, Kind.DELETE, None,
         seen.updated_at if seen is not None else view.mirror_updated_at)
    return DeleteResult(rid, dropped_edits=dropped)


def revert(conn: sqlite3.Connection, rid: str) -> None:
    """Drop a record's local work (pending or rejected entries, its conflict)."""
    working = _working(conn, rid)
    rejected = conn.execute(
        "SELECT 1 FROM changes WHERE record_id = ? AND state = 'rejected'", (rid,)
    ).fetchone()
    if working is None and not rejected:
        raise UsageError(f"record {rid} has no local changes to revert")
    in_flight = _open_kinds(conn, rid, ChangeState.IN_FLIGHT)
    unconfirmed = working is not None and working["state"] == RecordState.CONFLICT
    if Kind.CREATE in in_flight and not unconfirmed:
        raise UsageError(f"record {rid} is being created on the server; revert it after the next sync")
    if in_flight and not unconfirmed:
        raise UsageError(f"record {rid} is being sent by a running sync; revert it when the sync ends")
    _close(conn, rid, ChangeState.REVERTED,
           states=(ChangeState.PENDING, ChangeState.REJECTED, ChangeState.IN_FLIGHT))
    conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
    conn.execute("DELETE FROM mirror WHERE id = ? AND deleted_at IS NOT NULL", (rid,))


def discard_dataset(conn: sqlite3.Connection, dataset_id: str) -> int:
    """Drop every piece of local work in a dataset (``datasets --untrack --discard``);
    the caller holds the sync lock, so nothing is being sent. Returns how many records
    had some."""
    rids = {r[0] for r in conn.execute(
        """SELECT record_id FROM working WHERE dataset_id = :ds
           UNION SELECT record_id FROM changes WHERE dataset_id = :ds
                 AND state IN ('pending', 'in_flight', 'rejected')""",
        {"ds": dataset_id},
    )}
    for rid in rids:
        _close(conn, rid, ChangeState.REVERTED, "dataset untracked",
               states=(ChangeState.PENDING, ChangeState.IN_FLIGHT, ChangeState.REJECTED))
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
    return len(rids)


# ------------------------------------------------------------------ sync: edits and deletes


def recover(conn: sqlite3.Connection) -> int:
    """At the start of a sync (under its lock): entries left in flight by a sync that
    died are pending again — their outcome is unknown, and the 3-way merge against the
    unchanged base settles them whether or not they landed. Creates stay in flight
    until the server's listing shows whether they landed. Returns how many."""
    rows = conn.execute(
        "SELECT id, record_id, kind FROM changes WHERE state = 'in_flight' AND kind != 'create'"
    ).fetchall()
    for change_id, rid, kind in rows:
        _return_to_pending(conn, rid, kind, (change_id,))
    return len(rows)


def _return_to_pending(conn: sqlite3.Connection, rid: str, kind: str, ids: tuple[int, ...]) -> None:
    """In-flight entries whose outcome is unknown (or that were not sent) become pending,
    unless newer local work replaced them (a newer entry of that kind, or a delete)."""
    ids = tuple(
        r[0] for r in conn.execute(
            f"SELECT id FROM changes WHERE state = 'in_flight' AND id IN ({','.join('?' * len(ids))})", ids
        )
    ) if ids else ()
    if not ids:
        return  # not in flight (never marked, or settled already): nothing to put back
    working = _working(conn, rid)
    newer = kind in _open_kinds(conn, rid, ChangeState.PENDING)
    deleted = bool(working and working["deleted"]) and kind != Kind.DELETE
    if newer or deleted or working is None:
        _mark(conn, ids, ChangeState.SUPERSEDED, "replaced while it was being sent")
        if deleted and not working["is_create"]:  # type: ignore[index]
            conn.execute(f"UPDATE working SET {kind} = NULL WHERE record_id = ?", (rid,))
    else:
        _mark(conn, ids, ChangeState.PENDING)


def begin_push(
    conn: sqlite3.Connection, work: LocalWork, send: Mapping[str, dict[str, Any]]
) -> InFlight | None:
    """Mark the pending entries of the parts in ``send`` (part -> the value to PUT) in
    flight. Edited parts not in ``send`` already hold their value on the server and are
    settled now. Returns None when nothing is to be sent."""
    rid = work.record_id
    ids: dict[str, tuple[int, ...]] = {}
    for part in PARTS:
        if getattr(work, part) is None:
            continue
        entries = tuple(
            r[0] for r in conn.execute(
                "SELECT id FROM changes WHERE record_id = ? AND kind = ? AND state = 'pending'", (rid, part)
            )
        )
        if part in send:
            ids[part] = entries
            _mark(conn, entries, ChangeState.IN_FLIGHT)
            conn.execute(
                f"""UPDATE changes SET sent = CASE WHEN body = ? THEN NULL ELSE ? END
                    WHERE id IN ({','.join('?' * len(entries))})""",
                (canonical(send[part]), canonical(send[part]), *entries),
            )
        else:
            _mark(conn, entries, ChangeState.PUSHED, "the server already held this value")
            conn.execute(f"UPDATE working SET {part} = NULL WHERE record_id = ?", (rid,))
    if not ids:
        _drop_if_idle(conn, rid)
        return None
    return InFlight(rid, work.dataset_id, ids, {p: dict(v) for p, v in send.items()})


def push_done(conn: sqlite3.Connection, flight: InFlight, outcomes: Mapping[str, PartOutcome],
              messages: Mapping[str, str] | None = None) -> None:
    """Settle a push part by part: ``sent`` parts are on the server; ``rejected`` ones
    were refused (the message is kept); ``unknown`` ones may or may not have landed and
    are pending again against their unchanged base."""
    rid = flight.record_id
    messages = messages or {}
    for part, ids in flight.ids.items():
        outcome = outcomes.get(part, "unknown")
        if outcome == "sent":
            _mark(conn, ids, ChangeState.PUSHED)
            _mirror_set_part(conn, rid, part, flight.sent[part])
            working = _working(conn, rid)
            if working is None:
                continue
            if part in _open_kinds(conn, rid, ChangeState.PENDING) or working["deleted"]:
                # newer local work on this part was made against the value the user saw
                # while this one was sent: that local value is its base from now on
                body = conn.execute(
                    f"SELECT body FROM changes WHERE id = {int(ids[-1])}"
                ).fetchone()[0]
                conn.execute(
                    f"UPDATE working SET base_{part} = ?, base_{part}_at = NULL WHERE record_id = ?",
                    (body, rid),
                )
                if working["deleted"]:
                    conn.execute(f"UPDATE working SET {part} = NULL WHERE record_id = ?", (rid,))
            else:
                conn.execute(
                    f"UPDATE working SET {part} = NULL, base_{part} = ?, base_{part}_at = NULL "
                    "WHERE record_id = ?",
                    (canonical(flight.sent[part]), rid),
                )
        elif outcome == "rejected":
            _mark(conn, ids, ChangeState.REJECTED, messages.get(part, "rejected by the server"))
            if part not in _open_kinds(conn, rid, ChangeState.PENDING):
                conn.execute(f"UPDATE working SET {part} = NULL WHERE record_id = ?", (rid,))
        else:
            _return_to_pending(conn, rid, part, ids)
    _drop_if_idle(conn, rid)


def begin_delete(conn: sqlite3.Connection, work: LocalWork) -> InFlight:
    entries = tuple(
        r[0] for r in conn.execute(
            "SELECT id FROM changes WHERE record_id = ? AND kind = 'delete' AND state = 'pending'",
            (work.record_id,),
        )
    )
    # parts settled by the delete itself (superseded edits) have no pending entry left
    _mark(conn, entries, ChangeState.IN_FLIGHT)
    return InFlight(work.record_id, work.dataset_id, {Kind.DELETE: entries})


def delete_done(conn: sqlite3.Connection, flight: InFlight, outcome: PartOutcome, message: str | None = None) -> None:
    """``sent``: the record is gone from the server (a 404 means the same)."""
    rid = flight.record_id
    if outcome == "sent":
        _mark(conn, flight.all_ids(), ChangeState.PUSHED)
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
    elif outcome == "rejected":
        _mark(conn, flight.all_ids(), ChangeState.REJECTED, message or "rejected by the server")
        conn.execute("UPDATE working SET deleted = 0 WHERE record_id = ?", (rid,))
        _drop_if_idle(conn, rid)
    else:
        _return_to_pending(conn, rid, Kind.DELETE, flight.all_ids())


def settle(conn: sqlite3.Connection, work: LocalWork, *, remote_gone: bool) -> None:
    """The server already holds what the work wants: nothing to send."""
    rid = work.record_id
    _close(conn, rid, ChangeState.PUSHED, "the server already held this")
    if remote_gone:
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
        return
    for part in PARTS:
        if part not in _open_kinds(conn, rid):
            conn.execute(
                f"UPDATE working SET {part} = NULL WHERE record_id = ? AND is_create = 0", (rid,)
            )
    _drop_if_idle(conn, rid)


def conflict(conn: sqlite3.Connection, work: LocalWork, parts: Iterable[str]) -> None:
    conn.execute(
        """UPDATE working SET state = 'conflict', conflict_parts = ?, detected_at = ?
           WHERE record_id = ? AND state = 'pending'""",
        (canonical(list(parts)), now_ts(), work.record_id),
    )


def remote_gone(conn: sqlite3.Connection, rid: str) -> Literal["removed", "conflict", "kept"]:
    """The server no longer has the record (proven: a 404, ``deleted_at``, or its
    dataset is gone). Without local work it goes; a local delete is done; a local edit
    becomes an ``edit-vs-delete`` conflict (the mirror keeps a tombstone)."""
    working = _working(conn, rid)
    if working is None:
        conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
        return "removed"
    conn.execute("UPDATE mirror SET deleted_at = COALESCE(deleted_at, ?) WHERE id = ?", (now_ts(), rid))
    if working["state"] == RecordState.CONFLICT:
        if working["deleted"]:  # deleted on both sides: the conflict dissolves
            _close(conn, rid, ChangeState.PUSHED, "deleted on the server too")
            conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
            conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
            return "removed"
        return "kept"
    works = load_work(conn, [rid])
    if not works:
        if _open_kinds(conn, rid):
            return "kept"  # being sent; its outcome settles it
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
        return "removed"
    action = plan_record(works[0], None)
    if isinstance(action, Conflict):
        conflict(conn, works[0], action.parts)
        return "conflict"
    assert isinstance(action, Settle)
    settle(conn, works[0], remote_gone=True)
    return "removed"


# ------------------------------------------------------------------ sync: creates


def begin_create(conn: sqlite3.Connection, work: LocalWork) -> InFlight:
    """Committed before the POST: a crash after it is recognised by the next sync.
    The POSTed body becomes the base of edits made while the create is in flight."""
    rid = work.record_id
    row = conn.execute(
        "SELECT id, body FROM changes WHERE record_id = ? AND kind = 'create' AND state = 'pending'",
        (rid,),
    ).fetchone()
    assert row is not None, f"no pending create for {rid}"
    change_id, body_text = row
    body = json.loads(body_text)
    _mark(conn, (change_id,), ChangeState.IN_FLIGHT)
    conn.execute(
        "UPDATE working SET base_payload = ?, base_properties = ? WHERE record_id = ?",
        (canonical(body["payload"]), canonical(body.get("properties") or {}), rid),
    )
    return InFlight(rid, work.dataset_id, {Kind.CREATE: (change_id,)}, body)


def create_landed(conn: sqlite3.Connection, rid: str, record: Any) -> str:
    """The server created the in-flight create ``rid`` as ``record`` (its answer, or
    the listing that found it): everything moves to the server id in this transaction,
    and edits made while it was in flight become edits of the new record."""
    new = record.id
    conn.execute("INSERT OR IGNORE INTO datasets (id) VALUES (?)", (record.dataset_id,))
    upsert_mirror_rows(conn, [record])
    conn.execute(
        "INSERT OR REPLACE INTO id_map (provisional_id, server_id, mapped_at) VALUES (?, ?, ?)",
        (rid, new, now_ts()),
    )
    conn.execute("UPDATE changes SET record_id = ? WHERE record_id = ?", (new, rid))
    conn.execute("UPDATE judgement_runs SET record_id = ? WHERE record_id = ?", (new, rid))
    conn.execute("UPDATE working SET record_id = ? WHERE record_id = ?", (new, rid))
    conn.execute(
        "UPDATE working SET state = 'pending', conflict_parts = NULL, detected_at = NULL WHERE record_id = ?",
        (new,),
    )
    _close(conn, new, ChangeState.PUSHED, kinds=[Kind.CREATE], states=(ChangeState.IN_FLIGHT,))
    working = _working(conn, new)
    if working is None:
        return new
    open_kinds = _open_kinds(conn, new)
    conn.execute(
        """UPDATE working SET is_create = 0,
               base_payload = COALESCE(base_payload, :payload),
               base_properties = COALESCE(base_properties, :properties),
               base_payload_at = :at, base_properties_at = :at,
               payload = CASE WHEN :p THEN payload END,
               properties = CASE WHEN :q THEN properties END
           WHERE record_id = :rid""",
        {
            "rid": new, "at": record.updated_at,
            "payload": canonical(record.payload), "properties": canonical(record.properties),
            "p": Kind.PAYLOAD in open_kinds and not working["deleted"],
            "q": Kind.PROPERTIES in open_kinds and not working["deleted"],
        },
    )
    conn.execute(
        "UPDATE changes SET base_updated_at = ? WHERE record_id = ? AND state = 'pending'",
        (record.updated_at, new),
    )
    _drop_if_idle(conn, new)
    return new


def create_rejected(conn: sqlite3.Connection, rid: str, message: str) -> None:
    """The server refused the create (or its dataset is gone): it and every later edit
    of it are rejected; the local record goes."""
    _close(conn, rid, ChangeState.REJECTED, message, kinds=[Kind.CREATE],
           states=(ChangeState.PENDING, ChangeState.IN_FLIGHT))
    _close(conn, rid, ChangeState.REJECTED, f"its create was rejected: {message}")
    conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))


def create_unconfirmed(conn: sqlite3.Connection, rid: str) -> None:
    """A create whose answer was lost, while the server shows new records none of which
    is exactly what was POSTed: one may be it, changed since by someone else. Sending
    it again could make a duplicate, forgetting it could lose it: the user decides
    (``resolve --theirs``: it landed, drop it here; ``--ours``: send it again)."""
    conn.execute(
        """UPDATE working SET state = 'conflict', conflict_parts = ?, detected_at = ?
           WHERE record_id = ? AND state = 'pending'""",
        (canonical([CREATE_UNCONFIRMED]), now_ts(), rid),
    )


def create_not_landed(conn: sqlite3.Connection, rid: str) -> None:
    """Confirmed that an in-flight create never reached the server: it is a pending
    create again, folding in the edits made meanwhile (or dropped if deleted since)."""
    working = _working(conn, rid)
    _close(conn, rid, ChangeState.SUPERSEDED, "never reached the server; sent again",
           kinds=[Kind.CREATE], states=(ChangeState.IN_FLIGHT,))
    if working is None:
        return
    if working["deleted"]:
        _close(conn, rid, ChangeState.REVERTED, "deleted before it was created")
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        return
    _close(conn, rid, ChangeState.SUPERSEDED, "folded into the create", kinds=PARTS)
    conn.execute(
        """UPDATE working SET base_payload = NULL, base_properties = NULL,
               base_payload_at = NULL, base_properties_at = NULL,
               state = 'pending', conflict_parts = NULL, detected_at = NULL WHERE record_id = ?""",
        (rid,),
    )
    _log(conn, rid, working["dataset_id"], Kind.CREATE, _create_body(conn, rid), None)


def dataset_gone(conn: sqlite3.Connection, dataset_id: str) -> tuple[int, int]:
    """The server says the dataset no longer exists: its records are gone (edited ones
    become conflicts), its unsent creates are rejected, and it is no longer tracked.
    Returns (removed, conflicts)."""
    removed = conflicts = 0
    for (rid,) in conn.execute("SELECT id FROM mirror WHERE dataset_id = ?", (dataset_id,)).fetchall():
        outcome = remote_gone(conn, rid)
        removed += outcome == "removed"
        conflicts += outcome == "conflict"
    for (rid,) in conn.execute(
        "SELECT record_id FROM working WHERE dataset_id = ? AND is_create = 1", (dataset_id,)
    ).fetchall():
        # one whose answer was lost may have landed, but then it went with its dataset
        create_rejected(conn, rid, f"dataset {dataset_id} was deleted on the server")
    conn.execute("UPDATE datasets SET tracked = 0 WHERE id = ?", (dataset_id,))
    return removed, conflicts


# ------------------------------------------------------------------ resolution


def resolve_theirs(conn: sqlite3.Connection, rid: str) -> None:
    """Drop the local side of a conflict; the record is what the server has (for a
    create that may have landed: it is taken as landed, and forgotten here)."""
    _close(conn, rid, ChangeState.REVERTED, "resolved --theirs",
           states=(ChangeState.PENDING, ChangeState.IN_FLIGHT))
    conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
    conn.execute("DELETE FROM mirror WHERE id = ? AND deleted_at IS NOT NULL", (rid,))


def restart(conn: sqlite3.Connection, rid: str, remote: Remote, target: Content | None) -> None:
    """Settle a conflict as pending work against the current remote: ``target`` is what
    the record should become (None: deleted). Parts equal to the remote are not queued."""
    dataset_id = conn.execute("SELECT dataset_id FROM working WHERE record_id = ?", (rid,)).fetchone()[0]
    _close(conn, rid, ChangeState.SUPERSEDED, "resolved")
    local = {
        part: None if target is None or json_equal(getattr(target, part), getattr(remote.content, part))
        else canonical(getattr(target, part))
        for part in PARTS
    }
    if target is not None and not any(local.values()):
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        return
    conn.execute(
        """UPDATE working SET state = 'pending', conflict_parts = NULL, detected_at = NULL,
                  payload = ?, properties = ?, deleted = ?,
                  base_payload = ?, base_properties = ?, base_payload_at = ?, base_properties_at = ?
           WHERE record_id = ?""",
        (local["payload"], local["properties"], int(target is None),
         canonical(remote.content.payload), canonical(remote.content.properties),
         remote.updated_at, remote.updated_at, rid),
    )
    if target is None:
        _log(conn, rid, dataset_id, Kind.DELETE, None, remote.updated_at)
    for part in PARTS:
        if local[part] is not None:
            _log(conn, rid, dataset_id, Kind(part), local[part], remote.updated_at)


def narrow_conflict(
    conn: sqlite3.Connection, rid: str, base: Content, local: Content, parts: Sequence[str]
) -> None:
    """Some parts of a conflict were settled one at a time (``resolve ID PART``) while
    ``parts`` still conflict: the record stays in conflict on those, with ``base`` and
    ``local`` as its new per-part base and local values (a settled part's base is the
    remote value it was settled against). A part whose local value now equals its base
    is no longer edited (its entries are reverted: it shows the server's value); one
    whose local value changed gets a new pending entry, superseding the old one."""
    working = _working(conn, rid)
    assert working is not None and working["state"] == RecordState.CONFLICT and parts
    assert not working["deleted"] and not working["is_create"]
    for part in PARTS:
        old_base = json.loads(working[f"base_{part}"])
        old_local = old_base if working[part] is None else json.loads(working[part])
        new_base, new_local = getattr(base, part), getattr(local, part)
        if json_equal(old_base, new_base) and json_equal(old_local, new_local):
            continue
        if json_equal(new_local, new_base):
            _close(conn, rid, ChangeState.REVERTED, "resolved: the server's value taken", kinds=[part])
            conn.execute(f"UPDATE working SET {part} = NULL, base_{part} = ? WHERE record_id = ?",
                         (canonical(new_base), rid))
            continue
        conn.execute(f"UPDATE working SET {part} = ?, base_{part} = ? WHERE record_id = ?",
                     (canonical(new_local), canonical(new_base), rid))
        if not json_equal(old_local, new_local):
            _close(conn, rid, ChangeState.SUPERSEDED, "resolved part by part", kinds=[part])
            _log(conn, rid, working["dataset_id"], Kind(part), canonical(new_local), working[f"base_{part}_at"])
    conn.execute("UPDATE working SET conflict_parts = ? WHERE record_id = ?", (canonical(list(parts)), rid))


def recreate(conn: sqlite3.Connection, rid: str, target: Content) -> str:
    """The server deleted the record but the local side is kept: it becomes an offline
    create under a new provisional id (the old id maps to it)."""
    dataset_id = conn.execute("SELECT dataset_id FROM working WHERE record_id = ?", (rid,)).fetchone()[0]
    new = new_provisional_id()
    _close(conn, rid, ChangeState.SUPERSEDED, "resolved: re-created")
    conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
    conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
    conn.execute(
        """INSERT INTO working (record_id, dataset_id, payload, properties, is_create, created_at)
           VALUES (?, ?, ?, ?, 1, ?)""",
        (new, dataset_id, canonical(target.payload), canonical(target.properties), now_ts()),
    )
    conn.execute(
        "INSERT OR REPLACE INTO id_map (provisional_id, server_id, mapped_at) VALUES (?, ?, ?)",
        (rid, new, now_ts()),
    )
    _log(conn, new, dataset_id, Kind.CREATE,
         canonical({"payload": target.payload, "properties": target.properties}), None)
    return new
