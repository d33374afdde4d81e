"""Resolving conflicts: ``resolve_theirs``, ``restart``, ``narrow_conflict``, ``recreate``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from localstore.core.ids import new_provisional_id
from localstore.core.jsonvalue import json_equal
from localstore.core.merge import Content
from localstore.core.plan import Remote
from localstore.core.timestamps import now_ts
from localstore.store.jsontext import canonical
from localstore.store.ledger.state import (
    PARTS,
    ChangeState,
    Kind,
    RecordState,
    close_entries,
    log_change,
    working_row,
)

# ------------------------------------------------------------------ resolution


def resolve_theirs(conn: sqlite3.Connection, rid: str) -> None:
    """Drop the local side of a conflict; the record is what the server has (for a
    create that may have landed: it is taken as landed, and forgotten here)."""
    close_entries(conn, rid, ChangeState.REVERTED, "resolved --theirs",
           states=(ChangeState.PENDING, ChangeState.IN_FLIGHT))
    conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
    conn.execute("DELETE FROM mirror WHERE id = ? AND deleted_at IS NOT NULL", (rid,))


def restart(conn: sqlite3.Connection, rid: str, remote: Remote, target: Content | None) -> None:
    """Settle a conflict as pending work against the current remote: ``target`` is what
    the record should become (None: deleted). Parts equal to the remote are not queued."""
    dataset_id = conn.execute("SELECT dataset_id FROM working WHERE record_id = ?", (rid,)).fetchone()[0]
    close_entries(conn, rid, ChangeState.SUPERSEDED, "resolved")
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
        log_change(conn, rid, dataset_id, Kind.DELETE, None, remote.updated_at)
    for part in PARTS:
        if local[part] is not None:
            log_change(conn, rid, dataset_id, Kind(part), local[part], remote.updated_at)


def narrow_conflict(
    conn: sqlite3.Connection, rid: str, base: Content, local: Content, parts: Sequence[str]
) -> None:
    """Some parts of a conflict were settled one at a time (``resolve ID PART``) while
    ``parts`` still conflict: the record stays in conflict on those, with ``base`` and
    ``local`` as its new per-part base and local values (a settled part's base is the
    remote value it was settled against). A part whose local value now equals its base
    is no longer edited (its entries are reverted: it shows the server's value); one
    whose local value changed gets a new pending entry, superseding the old one."""
    working = working_row(conn, rid)
    assert working is not None and working["state"] == RecordState.CONFLICT and parts
    assert not working["deleted"] and not working["is_create"]
    for part in PARTS:
        old_base = json.loads(working[f"base_{part}"])
        old_local = old_base if working[part] is None else json.loads(working[part])
        new_base, new_local = getattr(base, part), getattr(local, part)
        if json_equal(old_base, new_base) and json_equal(old_local, new_local):
            continue
        if json_equal(new_local, new_base):
            close_entries(conn, rid, ChangeState.REVERTED, "resolved: the server's value taken", kinds=[part])
            conn.execute(f"UPDATE working SET {part} = NULL, base_{part} = ? WHERE record_id = ?",
                         (canonical(new_base), rid))
            continue
        conn.execute(f"UPDATE working SET {part} = ?, base_{part} = ? WHERE record_id = ?",
                     (canonical(new_local), canonical(new_base), rid))
        if not json_equal(old_local, new_local):
            close_entries(conn, rid, ChangeState.SUPERSEDED, "resolved part by part", kinds=[part])
            log_change(conn, rid, working["dataset_id"], Kind(part), canonical(new_local), working[f"base_{part}_at"])
    conn.execute("UPDATE working SET conflict_parts = ? WHERE record_id = ?", (canonical(list(parts)), rid))


def recreate(conn: sqlite3.Connection, rid: str, target: Content) -> str:
    """The server deleted the record but the local side is kept: it becomes an offline
    create under a new provisional id (the old id maps to it)."""
    dataset_id = conn.execute("SELECT dataset_id FROM working WHERE record_id = ?", (rid,)).fetchone()[0]
    new = new_provisional_id()
    close_entries(conn, rid, ChangeState.SUPERSEDED, "resolved: re-created")
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
    log_change(conn, new, dataset_id, Kind.CREATE,
         canonical({"payload": target.payload, "properties": target.properties}), None)
    return new
