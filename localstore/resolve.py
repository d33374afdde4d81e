"""Settling conflicts: ``--ours`` keeps the local values rebased on the current remote,
``--theirs`` drops the local side, ``--file`` takes a merged JSON. Nothing is lost: the
local side's change-log entries stay in the log whatever is chosen."""

from __future__ import annotations

import sqlite3
from typing import Any, Literal

from . import reconcile
from .edits import log_change, resolve_record_id, validate_object
from .errors import UsageError
from .ids import new_provisional_id
from .jsonutil import canonical, json_equal
from .merge import Content, rebase_local
from .plan import LocalWork, Remote
from .store import Store
from .timeutil import now_ts

Choice = Literal["ours", "theirs", "file"]


def resolve(
    store: Store,
    record_id: str,
    choice: Choice,
    merged: dict[str, Any] | None = None,
) -> str:
    """Settle one conflict. ``merged`` (for ``file``) is ``{"payload": …, "properties": …}``;
    a missing part keeps the remote's. Returns the record id that now holds the result
    (a new provisional id when a record deleted on the server is brought back)."""
    if choice == "file":
        if merged is None:
            raise UsageError("resolve --file needs the merged JSON")
        validate_object(merged, "the merged file")
        unknown = set(merged) - {"payload", "properties"}
        if unknown:
            raise UsageError(
                f"the merged file may hold only \"payload\" and \"properties\", not {', '.join(sorted(unknown))}"
            )
        for part in ("payload", "properties"):
            if part in merged:
                validate_object(merged[part], f"the merged file's {part}")
    with store.transaction() as conn:
        rid = resolve_record_id(conn, record_id)
        works = reconcile.load_work(conn, [rid], state="conflict")
        if not works:
            raise UsageError(f"record {rid} has no open conflict; `localstore conflicts` lists them")
        work = works[0]
        remote = reconcile.load_remotes(conn, [rid])[rid]
        local = work.local_content()
        if choice == "theirs" or (local is None and remote is None):
            _take_theirs(conn, work, remote)
            return rid
        if choice == "ours":
            if local is None:  # delete here vs edit there: delete again, against what is there now
                assert remote is not None
                _restart(conn, work, remote, None)
                return rid
            target = local if remote is None else rebase_local(work.base, local, remote.content)  # type: ignore[arg-type]
        else:
            assert merged is not None
            fallback = remote.content if remote is not None else local or work.base
            assert fallback is not None
            target = Content(merged.get("payload", fallback.payload), merged.get("properties", fallback.properties))
        if remote is None:
            return _recreate(conn, work, target)
        _restart(conn, work, remote, target)
        return rid


def _take_theirs(conn: sqlite3.Connection, work: LocalWork, remote: Remote | None) -> None:
    conn.execute(
        "UPDATE changes SET state = 'reverted', error = 'resolved --theirs' WHERE record_id = ? AND state = 'pending'",
        (work.record_id,),
    )
    conn.execute("DELETE FROM working WHERE record_id = ?", (work.record_id,))
    if remote is None:
        conn.execute("DELETE FROM mirror WHERE id = ?", (work.record_id,))


def _restart(conn: sqlite3.Connection, work: LocalWork, remote: Remote, target: Content | None) -> None:
    """Make the working copy pending again against the current remote: ``target`` None
    means a delete."""
    rid = work.record_id
    conn.execute(
        "UPDATE changes SET state = 'superseded', error = 'resolved' WHERE record_id = ? AND state = 'pending'",
        (rid,),
    )
    payload = None if target is None or json_equal(target.payload, remote.content.payload) else canonical(target.payload)
    properties = (
        None if target is None or json_equal(target.properties, remote.content.properties) else canonical(target.properties)
    )
    if target is not None and payload is None and properties is None:
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        return
    conn.execute(
        """UPDATE working SET state = 'pending', conflict_parts = NULL, detected_at = NULL,
                  payload = ?, properties = ?, deleted = ?,
                  base_payload = ?, base_properties = ?, base_updated_at = ?
           WHERE record_id = ?""",
        (payload, properties, int(target is None), canonical(remote.content.payload),
         canonical(remote.content.properties), remote.updated_at, rid),
    )
    if target is None:
        log_change(conn, rid, work.dataset_id, "delete", None, remote.updated_at)
    for kind, value in (("payload", payload), ("properties", properties)):
        if value is not None:
            log_change(conn, rid, work.dataset_id, kind, value, remote.updated_at)


def _recreate(conn: sqlite3.Connection, work: LocalWork, target: Content) -> str:
    """The server deleted the record but the local side is kept: it becomes an offline
    create under a new provisional id (the old id maps to it)."""
    old, new = work.record_id, new_provisional_id()
    conn.execute(
        "UPDATE changes SET state = 'superseded', error = 'resolved: re-created' WHERE record_id = ? AND state = 'pending'",
        (old,),
    )
    conn.execute("DELETE FROM working WHERE record_id = ?", (old,))
    conn.execute("DELETE FROM mirror WHERE id = ?", (old,))
    conn.execute(
        """INSERT INTO working (record_id, dataset_id, payload, properties, is_create, created_at)
           VALUES (?, ?, ?, ?, 1, ?)""",
        (new, work.dataset_id, canonical(target.payload), canonical(target.properties), now_ts()),
    )
    conn.execute(
        "INSERT OR REPLACE INTO id_map (provisional_id, server_id, mapped_at) VALUES (?, ?, ?)",
        (old, new, now_ts()),
    )
    log_change(conn, new, work.dataset_id, "create",
         canonical({"payload": target.payload, "properties": target.properties}), None)
    return new
