"""Settling conflicts: ``--ours`` keeps the local values rebased on the current remote,
``--theirs`` drops the local side, ``--file`` takes a merged JSON. Nothing is lost: the
local side's change-log entries stay in the log whatever is chosen.

A conflict can also be settled one part at a time (``resolve ID /properties/label
--theirs``, with the part names ``conflicts`` prints): the part's base moves to the
server's current value, and ``--theirs`` also takes that value locally, so the part no
longer conflicts. The record is merged again against the server's current state: while
parts still conflict it stays in conflict on them; once none does, it is pending work
(or nothing at all when the result is what the server holds)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from localstore.core.merge import MISSING, PAYLOAD, Content, merge, property_key, rebase_local
from localstore.core.plan import LocalWork, Remote
from localstore.errors import UsageError
from localstore.ops.edits import resolve_record_id, validate_object
from localstore.store import ledger
from localstore.store.db import Store
from localstore.store.ledger import CREATE_UNCONFIRMED, RecordState

Choice = Literal["ours", "theirs", "file"]
ResolutionOutcome = Literal["settled", "pending", "conflict", "recreated", "resend", "landed"]


@dataclass(frozen=True)
class Resolution:
    """What a resolve did, for the message that says so.

    ``outcome``: ``settled`` (nothing left to push: the record is what the server has),
    ``pending`` (``queued`` kinds wait for the next sync), ``conflict`` (``remaining``
    parts still conflict), ``recreated`` (deleted on the server, the local version is a
    new offline create, ``record_id``), ``resend`` (a create whose answer was lost is
    sent again), ``landed`` (such a create is taken as landed, forgotten here)."""

    record_id: str
    old_id: str
    choice: Choice
    parts: tuple[str, ...]  # the parts settled by name (empty: the whole record)
    outcome: ResolutionOutcome
    queued: tuple[str, ...] = ()
    remaining: tuple[str, ...] = ()


def resolve(
    store: Store,
    record_id: str,
    choice: Choice,
    merged: dict[str, Any] | None = None,
) -> str:
    """Settle one conflict. ``merged`` (for ``file``) is ``{"payload": …, "properties": …}``;
    a missing part keeps the remote's. Returns the record id that now holds the result
    (a new provisional id when a record deleted on the server is brought back)."""
    return resolve_conflict(store, record_id, choice, merged).record_id


def resolve_conflict(
    store: Store,
    record_id: str,
    choice: Choice,
    merged: dict[str, Any] | None = None,
    parts: tuple[str, ...] = (),
) -> Resolution:
    """Settle a conflict, whole or (``parts``, with ``ours``/``theirs``) part by part;
    see :func:`resolve` and the module's docstring."""
    if choice == "file":
        if parts:
            raise UsageError("a merged file settles the whole record: give PART only with --ours or --theirs")
        _check_merged(merged)
    with store.transaction() as conn:
        rid = resolve_record_id(conn, record_id)
        row = conn.execute(
            "SELECT conflict_parts FROM working WHERE record_id = ? AND state = 'conflict'", (rid,)
        ).fetchone()
        if row is None:
            raise UsageError(f"record {rid} has no open conflict; `localstore conflicts` lists them")
        conflicting = tuple(json.loads(row[0] or "[]"))
        unknown = [p for p in parts if p not in conflicting]
        if unknown:
            raise UsageError(
                f"record {rid} has no conflict on {', '.join(unknown)}; its conflicting parts: "
                f"{', '.join(conflicting)} (as `localstore conflicts` names them)"
            )
        unconfirmed = conflicting == (CREATE_UNCONFIRMED,)
        if unconfirmed:
            target = _resolve_unconfirmed_create(conn, rid, choice, merged)
        elif parts and all(p == PAYLOAD or property_key(p) is not None for p in parts):
            # local edits that do not conflict stay, even when every part is named
            target = _resolve_parts(conn, rid, choice, parts)
        else:  # the whole record (a part such as delete-vs-edit names all of it)
            target = _resolve_whole(conn, rid, choice, merged)
        return _outcome(conn, record_id=target, old_id=rid, choice=choice, parts=parts, unconfirmed=unconfirmed)


def _check_merged(merged: dict[str, Any] | None) -> None:
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


def _conflict_work(conn: sqlite3.Connection, rid: str) -> tuple[LocalWork, Remote | None]:
    works = ledger.load_work(conn, [rid], state=RecordState.CONFLICT)
    if not works:
        raise UsageError(f"record {rid} has no open conflict; `localstore conflicts` lists them")
    return works[0], ledger.remote_of_mirror(conn, rid)


def _resolve_whole(conn: sqlite3.Connection, rid: str, choice: Choice, merged: dict[str, Any] | None) -> str:
    work, remote = _conflict_work(conn, rid)
    local = work.local_content()
    if choice == "theirs" or (local is None and remote is None):
        ledger.resolve_theirs(conn, rid)
        return rid
    if choice == "ours":
        if local is None:  # delete here vs edit there: delete again, against what is there now
            assert remote is not None
            ledger.restart(conn, rid, remote, None)
            return rid
        assert work.base is not None
        target = local if remote is None else rebase_local(work.base, local, remote.content)
    else:
        assert merged is not None
        fallback = remote.content if remote is not None else local or work.base
        assert fallback is not None
        target = Content(merged.get("payload", fallback.payload), merged.get("properties", fallback.properties))
    if remote is None:
        return ledger.recreate(conn, rid, target)
    ledger.restart(conn, rid, remote, target)
    return rid


def _resolve_parts(conn: sqlite3.Connection, rid: str, choice: Choice, parts: tuple[str, ...]) -> str:
    """Settle the named parts (payload, property keys): each one's base becomes the
    server's current value (and, for theirs, its local value too); then merge again."""
    work, remote = _conflict_work(conn, rid)
    local = work.local_content()
    if remote is None or local is None or work.base is None:
        raise UsageError(
            f"record {rid} was deleted on one side since: settle it whole, "
            f"`localstore resolve {rid} --ours|--theirs`"
        )
    base_payload, local_payload = work.base.payload, local.payload
    base_props, local_props = dict(work.base.properties), dict(local.properties)
    for part in parts:
        if part == PAYLOAD:
            base_payload = remote.content.payload
            if choice == "theirs":
                local_payload = remote.content.payload
            continue
        key = property_key(part)
        assert key is not None
        theirs = remote.content.properties.get(key, MISSING)
        targets = [base_props, local_props] if choice == "theirs" else [base_props]
        for props in targets:
            if theirs is MISSING:
                props.pop(key, None)
            else:
                props[key] = theirs
    base, mine = Content(base_payload, base_props), Content(local_payload, local_props)
    result = merge(base, mine, remote.content)
    if result.clean:
        assert result.content is not None
        ledger.restart(conn, rid, remote, result.content)
    else:
        ledger.narrow_conflict(conn, rid, base, mine, result.conflicts)
    return rid


def _resolve_unconfirmed_create(
    conn: sqlite3.Connection, rid: str, choice: Choice, merged: dict[str, Any] | None
) -> str:
    """A create that may have landed: ``--theirs`` takes it as landed (forgotten here),
    ``--ours`` sends it again, ``--file`` sends the file's content."""
    if choice == "theirs":
        ledger.resolve_theirs(conn, rid)
        return rid
    ledger.create_not_landed(conn, rid)
    if choice == "file" and merged is not None:
        ledger.edit(conn, rid, merged.get("payload"), merged.get("properties"))
    return rid


def _outcome(
    conn: sqlite3.Connection, *, record_id: str, old_id: str, choice: Choice, parts: tuple[str, ...],
    unconfirmed: bool,
) -> Resolution:
    row = conn.execute(
        "SELECT state, conflict_parts, is_create FROM working WHERE record_id = ?", (record_id,)
    ).fetchone()
    kinds = tuple(sorted(r[0] for r in conn.execute(
        "SELECT DISTINCT kind FROM changes WHERE record_id = ? AND state = 'pending'", (record_id,)
    )))
    outcome: ResolutionOutcome
    remaining: tuple[str, ...] = ()
    if row is None:
        outcome = "landed" if unconfirmed else "settled"
    elif row[0] == RecordState.CONFLICT:
        outcome, remaining = "conflict", tuple(json.loads(row[1] or "[]"))
    elif record_id != old_id:
        outcome = "recreated"
    elif unconfirmed:
        outcome = "resend"
    else:
        outcome = "pending"
    return Resolution(record_id, old_id, choice, parts, outcome, kinds, remaining)
