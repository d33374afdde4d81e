"""Settling conflicts: ``--ours`` keeps the local values rebased on the current remote,
``--theirs`` drops the local side, ``--file`` takes a merged JSON. Nothing is lost: the
local side's change-log entries stay in the log whatever is chosen."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Literal

from . import ledger
from .edits import resolve_record_id, validate_object
from .errors import UsageError
from .ledger import CREATE_UNCONFIRMED, RecordState
from .merge import Content, rebase_local
from .store import Store

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
        parts = conn.execute(
            "SELECT conflict_parts FROM working WHERE record_id = ? AND state = 'conflict'", (rid,)
        ).fetchone()
        if parts is not None and json.loads(parts[0] or "[]") == [CREATE_UNCONFIRMED]:
            return _resolve_unconfirmed_create(conn, rid, choice, merged)
        works = ledger.load_work(conn, [rid], state=RecordState.CONFLICT)
        if not works:
            raise UsageError(f"record {rid} has no open conflict; `localstore conflicts` lists them")
        work = works[0]
        remote = ledger.remote_of_mirror(conn, rid)
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
