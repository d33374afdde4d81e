"""User edits: ``edit``, ``create``, ``delete``, ``revert``, ``discard_dataset``, and
``current`` (the record as the user sees it)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from localstore.core.ids import new_provisional_id
from localstore.core.jsonvalue import json_equal
from localstore.core.plan import Remote
from localstore.core.timestamps import now_ts
from localstore.errors import NotFoundLocally, UsageError
from localstore.store.jsontext import canonical
from localstore.store.ledger.state import (
    PARTS,
    ChangeState,
    DeleteResult,
    Kind,
    RecordState,
    close_entries,
    log_change,
    open_change_kinds,
    working_row,
)

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
    working = working_row(conn, rid)
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
    view.working = working_row(conn, view.record_id)


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
        close_entries(conn, rid, ChangeState.SUPERSEDED, kinds=[Kind.CREATE])
        log_change(conn, rid, view.dataset_id, Kind.CREATE, create_body(conn, rid), None)
        return tuple(changed)
    _ensure_working(conn, view)
    for part, text in changed.items():
        _refresh_base(conn, rid, part, seen)
        conn.execute(f"UPDATE working SET {part} = ? WHERE record_id = ?", (text, rid))
        close_entries(conn, rid, ChangeState.SUPERSEDED, kinds=[part])
        base_at = conn.execute(
            f"SELECT base_{part}_at FROM working WHERE record_id = ?", (rid,)
        ).fetchone()[0]
        log_change(conn, rid, view.dataset_id, Kind(part), text, base_at)
    return tuple(changed)


def create_body(conn: sqlite3.Connection, rid: str) -> str:
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
    log_change(conn, rid, dataset_id, Kind.CREATE, canonical({"payload": payload, "properties": properties}), None)
    return rid


def delete(conn: sqlite3.Connection, rid: str, *, seen: Remote | None = None) -> DeleteResult:
    """Queue a delete. A create never sent is simply dropped; pending edits of the
    record are replaced by the delete (they stay in the log, superseded). ``seen``: the
    remote version the user deleted, when it is not the mirror's (see :func:`edit`);
    the sync turns a delete of an older version into a delete-vs-edit conflict."""
    view = _view(conn, rid)
    if view.is_create and not view.creating:
        close_entries(conn, rid, ChangeState.REVERTED, "deleted before it was sent")
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        return DeleteResult(rid, dropped_unsent_create=True)
    _ensure_working(conn, view)
    in_flight = open_change_kinds(conn, rid, ChangeState.IN_FLIGHT)
    dropped = tuple(k for k in PARTS if k in open_change_kinds(conn, rid, ChangeState.PENDING))
    for part in PARTS:
        _refresh_base(conn, rid, part, seen)
    close_entries(conn, rid, ChangeState.SUPERSEDED, "replaced by a delete", kinds=PARTS)
    if not view.is_create:
        # a part being sent keeps its local value until its outcome is known
        for part in PARTS:
            if part not in in_flight:
                conn.execute(f"UPDATE working SET {part} = NULL WHERE record_id = ?", (rid,))
    conn.execute("UPDATE working SET deleted = 1 WHERE record_id = ?", (rid,))
    log_change(conn, rid, view.dataset_id, Kind.DELETE, None,
         seen.updated_at if seen is not None else view.mirror_updated_at)
    return DeleteResult(rid, dropped_edits=dropped)


def revert(conn: sqlite3.Connection, rid: str) -> None:
    """Drop a record's local work (pending or rejected entries, its conflict)."""
    working = working_row(conn, rid)
    rejected = conn.execute(
        "SELECT 1 FROM changes WHERE record_id = ? AND state = 'rejected'", (rid,)
    ).fetchone()
    if working is None and not rejected:
        raise UsageError(f"record {rid} has no local changes to revert")
    in_flight = open_change_kinds(conn, rid, ChangeState.IN_FLIGHT)
    unconfirmed = working is not None and working["state"] == RecordState.CONFLICT
    if Kind.CREATE in in_flight and not unconfirmed:
        raise UsageError(f"record {rid} is being created on the server; revert it after the next sync")
    if in_flight and not unconfirmed:
        raise UsageError(f"record {rid} is being sent by a running sync; revert it when the sync ends")
    close_entries(conn, rid, ChangeState.REVERTED,
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
        close_entries(conn, rid, ChangeState.REVERTED, "dataset untracked",
               states=(ChangeState.PENDING, ChangeState.IN_FLIGHT, ChangeState.REJECTED))
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
    return len(rids)
