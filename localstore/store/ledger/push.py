"""Sync's transitions: sending edits and deletes (``begin_push``/``push_done`` …), creates
(``begin_create``/``create_landed`` …), and what the remote said (``settle``, ``conflict``,
``remote_gone``, ``dataset_gone``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from localstore.core.plan import Conflict, LocalWork, Settle, plan_record
from localstore.core.timestamps import now_ts
from localstore.store.jsontext import canonical
from localstore.store.ledger.edits import create_body
from localstore.store.ledger.state import (
    CREATE_UNCONFIRMED,
    PARTS,
    ChangeState,
    InFlight,
    Kind,
    PartOutcome,
    RecordState,
    close_entries,
    drop_if_idle,
    load_work,
    log_change,
    mark_entries,
    mirror_set_part,
    open_change_kinds,
    working_row,
)
from localstore.store.mirror import upsert_mirror_rows

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
    working = working_row(conn, rid)
    newer = kind in open_change_kinds(conn, rid, ChangeState.PENDING)
    deleted = bool(working and working["deleted"]) and kind != Kind.DELETE
    if newer or deleted or working is None:
        mark_entries(conn, ids, ChangeState.SUPERSEDED, "replaced while it was being sent")
        if deleted and not working["is_create"]:  # type: ignore[index]
            conn.execute(f"UPDATE working SET {kind} = NULL WHERE record_id = ?", (rid,))
    else:
        mark_entries(conn, ids, ChangeState.PENDING)


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
            mark_entries(conn, entries, ChangeState.IN_FLIGHT)
            conn.execute(
                f"""UPDATE changes SET sent = CASE WHEN body = ? THEN NULL ELSE ? END
                    WHERE id IN ({','.join('?' * len(entries))})""",
                (canonical(send[part]), canonical(send[part]), *entries),
            )
        else:
            mark_entries(conn, entries, ChangeState.PUSHED, "the server already held this value")
            conn.execute(f"UPDATE working SET {part} = NULL WHERE record_id = ?", (rid,))
    if not ids:
        drop_if_idle(conn, rid)
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
            mark_entries(conn, ids, ChangeState.PUSHED)
            mirror_set_part(conn, rid, part, flight.sent[part])
            working = working_row(conn, rid)
            if working is None:
                continue
            if part in open_change_kinds(conn, rid, ChangeState.PENDING) or working["deleted"]:
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
            mark_entries(conn, ids, ChangeState.REJECTED, messages.get(part, "rejected by the server"))
            if part not in open_change_kinds(conn, rid, ChangeState.PENDING):
                conn.execute(f"UPDATE working SET {part} = NULL WHERE record_id = ?", (rid,))
        else:
            _return_to_pending(conn, rid, part, ids)
    drop_if_idle(conn, rid)


def begin_deletes(conn: sqlite3.Connection, works: Sequence[LocalWork]) -> list[InFlight]:
    """:func:`begin_delete` for many records in one statement (sync plans a page at a time)."""
    if not works:
        return []
    entries: dict[str, list[int]] = {}
    for change_id, rid in conn.execute(
        """UPDATE changes SET state = 'in_flight'
           WHERE kind = 'delete' AND state = 'pending'
             AND record_id IN (SELECT value FROM json_each(?))
           RETURNING id, record_id""",
        (canonical([w.record_id for w in works]),),
    ).fetchall():
        entries.setdefault(rid, []).append(change_id)
    return [InFlight(w.record_id, w.dataset_id, {Kind.DELETE: tuple(sorted(entries.get(w.record_id, ())))})
            for w in works]


def begin_delete(conn: sqlite3.Connection, work: LocalWork) -> InFlight:
    entries = tuple(
        r[0] for r in conn.execute(
            "SELECT id FROM changes WHERE record_id = ? AND kind = 'delete' AND state = 'pending'",
            (work.record_id,),
        )
    )
    # parts settled by the delete itself (superseded edits) have no pending entry left
    mark_entries(conn, entries, ChangeState.IN_FLIGHT)
    return InFlight(work.record_id, work.dataset_id, {Kind.DELETE: entries})


def delete_done(conn: sqlite3.Connection, flight: InFlight, outcome: PartOutcome, message: str | None = None) -> None:
    """``sent``: the record is gone from the server (a 404 means the same)."""
    rid = flight.record_id
    if outcome == "sent":
        mark_entries(conn, flight.all_ids(), ChangeState.PUSHED)
        # the mirror row first: then neither delete has search rows to rebuild
        conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
    elif outcome == "rejected":
        mark_entries(conn, flight.all_ids(), ChangeState.REJECTED, message or "rejected by the server")
        conn.execute("UPDATE working SET deleted = 0 WHERE record_id = ?", (rid,))
        drop_if_idle(conn, rid)
    else:
        _return_to_pending(conn, rid, Kind.DELETE, flight.all_ids())


def deletes_done(
    conn: sqlite3.Connection, outcomes: Sequence[tuple[InFlight, PartOutcome, str | None]]
) -> None:
    """:func:`delete_done` for many records (one record once): the deletes that reached
    the server in three statements, the others one by one."""
    sent = [flight for flight, outcome, _ in outcomes if outcome == "sent"]
    if sent:
        records = canonical([f.record_id for f in sent])
        conn.execute(
            """UPDATE changes SET state = 'pushed', pushed_at = ?
               WHERE id IN (SELECT value FROM json_each(?))""",
            (now_ts(), canonical([i for f in sent for i in f.all_ids()])),
        )
        conn.execute("DELETE FROM mirror WHERE id IN (SELECT value FROM json_each(?))", (records,))
        conn.execute("DELETE FROM working WHERE record_id IN (SELECT value FROM json_each(?))", (records,))
    for flight, outcome, message in outcomes:
        if outcome != "sent":
            delete_done(conn, flight, outcome, message)


def settle(conn: sqlite3.Connection, work: LocalWork, *, remote_gone: bool) -> None:
    """The server already holds what the work wants: nothing to send."""
    rid = work.record_id
    close_entries(conn, rid, ChangeState.PUSHED, "the server already held this")
    if remote_gone:
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
        return
    for part in PARTS:
        if part not in open_change_kinds(conn, rid):
            conn.execute(
                f"UPDATE working SET {part} = NULL WHERE record_id = ? AND is_create = 0", (rid,)
            )
    drop_if_idle(conn, rid)


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
    working = working_row(conn, rid)
    if working is None:
        conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
        return "removed"
    conn.execute("UPDATE mirror SET deleted_at = COALESCE(deleted_at, ?) WHERE id = ?", (now_ts(), rid))
    if working["state"] == RecordState.CONFLICT:
        if working["deleted"]:  # deleted on both sides: the conflict dissolves
            close_entries(conn, rid, ChangeState.PUSHED, "deleted on the server too")
            conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
            conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
            return "removed"
        return "kept"
    works = load_work(conn, [rid])
    if not works:
        if open_change_kinds(conn, rid):
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
    mark_entries(conn, (change_id,), ChangeState.IN_FLIGHT)
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
    close_entries(conn, new, ChangeState.PUSHED, kinds=[Kind.CREATE], states=(ChangeState.IN_FLIGHT,))
    working = working_row(conn, new)
    if working is None:
        return new
    open_kinds = open_change_kinds(conn, new)
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
    drop_if_idle(conn, new)
    return new


def create_rejected(conn: sqlite3.Connection, rid: str, message: str) -> None:
    """The server refused the create (or its dataset is gone): it and every later edit
    of it are rejected; the local record goes."""
    close_entries(conn, rid, ChangeState.REJECTED, message, kinds=[Kind.CREATE],
           states=(ChangeState.PENDING, ChangeState.IN_FLIGHT))
    close_entries(conn, rid, ChangeState.REJECTED, f"its create was rejected: {message}")
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
    working = working_row(conn, rid)
    close_entries(conn, rid, ChangeState.SUPERSEDED, "never reached the server; sent again",
           kinds=[Kind.CREATE], states=(ChangeState.IN_FLIGHT,))
    if working is None:
        return
    if working["deleted"]:
        close_entries(conn, rid, ChangeState.REVERTED, "deleted before it was created")
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        return
    close_entries(conn, rid, ChangeState.SUPERSEDED, "folded into the create", kinds=PARTS)
    conn.execute(
        """UPDATE working SET base_payload = NULL, base_properties = NULL,
               base_payload_at = NULL, base_properties_at = NULL,
               state = 'pending', conflict_parts = NULL, detected_at = NULL WHERE record_id = ?""",
        (rid,),
    )
    log_change(conn, rid, working["dataset_id"], Kind.CREATE, create_body(conn, rid), None)


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
