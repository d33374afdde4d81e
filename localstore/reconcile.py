"""Applying what the server said to the store: each function runs inside the caller's
transaction and leaves working copies, the change log and the mirror consistent.

A user may edit while a sync runs, so every outcome touches only the change-log
entries the sync planned with (``LocalWork.change_ids``); newer edits stay pending on
a working copy rebased onto what the server now holds.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from .edits import log_change
from .jsonutil import canonical, json_equal
from .merge import Content
from .plan import Conflict, LocalWork, Remote, Settle, plan_record
from .store import MIRROR_UPSERT, RecordLike, _mirror_row
from .timeutil import now_ts

OPEN_STATES = ("pending", "in_flight")


# ------------------------------------------------------------------ reading


def load_work(
    conn: sqlite3.Connection, record_ids: Iterable[str] | None = None, *, state: str = "pending"
) -> list[LocalWork]:
    """Working copies in ``state`` (pending: what sync pushes) with the change-log entries
    they cover."""
    sql = """SELECT w.record_id, w.dataset_id, w.payload, w.properties, w.deleted, w.is_create,
                    w.base_payload, w.base_properties, w.base_updated_at,
                    (SELECT group_concat(c.id) FROM changes AS c
                     WHERE c.record_id = w.record_id AND c.state IN ('pending', 'in_flight')) AS ids
             FROM working AS w WHERE w.state = ?"""
    params: list[Any] = [state]
    if record_ids is not None:
        wanted = list(record_ids)
        sql += f" AND w.record_id IN ({','.join('?' * len(wanted))})"
        params.extend(wanted)
    works = []
    for row in conn.execute(sql + " ORDER BY w.dataset_id, w.record_id", params):
        rid, ds, payload, properties, deleted, is_create, bp, bprops, bupd, ids = row
        if not ids:
            continue
        base = None if is_create else Content(json.loads(bp), json.loads(bprops))
        kind = "create" if is_create else "delete" if deleted else "edit"
        works.append(
            LocalWork(
                record_id=rid,
                dataset_id=ds,
                kind=kind,
                payload=None if payload is None else json.loads(payload),
                properties=None if properties is None else json.loads(properties),
                base=base,
                base_updated_at=bupd,
                change_ids=tuple(sorted(int(i) for i in ids.split(","))),
            )
        )
    return works


def load_remotes(conn: sqlite3.Connection, record_ids: Iterable[str]) -> dict[str, Remote | None]:
    """The mirror's view of these records (None: not there, or a tombstone)."""
    remotes: dict[str, Remote | None] = {}
    for rid in record_ids:
        row = conn.execute(
            "SELECT updated_at, deleted_at, payload, properties FROM mirror WHERE id = ?", (rid,)
        ).fetchone()
        if row is None or row[1] is not None:
            remotes[rid] = None
        else:
            remotes[rid] = Remote(row[0], Content(json.loads(row[2]), json.loads(row[3])))
    return remotes


# ------------------------------------------------------------------ outcomes


def _mark(conn: sqlite3.Connection, ids: Iterable[int], state: str, error: str | None = None) -> None:
    ids = list(ids)
    if not ids:
        return
    pushed_at = now_ts() if state == "pushed" else None
    conn.execute(
        f"""UPDATE changes SET state = ?, error = ?, pushed_at = COALESCE(?, pushed_at)
            WHERE id IN ({','.join('?' * len(ids))})""",
        (state, error, pushed_at, *ids),
    )


def _remaining_kinds(conn: sqlite3.Connection, rid: str) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT kind FROM changes WHERE record_id = ? AND state IN ('pending', 'in_flight')", (rid,)
        )
    }


def _rebase_or_drop(conn: sqlite3.Connection, rid: str) -> None:
    """After the planned entries settled: drop the working copy, or — when newer edits
    arrived meanwhile — rebase it on the mirror and keep only the parts still pending."""
    remaining = _remaining_kinds(conn, rid)
    if not remaining:
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        return
    conn.execute(
        """UPDATE working SET
               base_payload = (SELECT payload FROM mirror WHERE id = :rid),
               base_properties = (SELECT properties FROM mirror WHERE id = :rid),
               base_updated_at = (SELECT updated_at FROM mirror WHERE id = :rid),
               payload = CASE WHEN :p THEN payload END,
               properties = CASE WHEN :q THEN properties END,
               is_create = 0
           WHERE record_id = :rid""",
        {"rid": rid, "p": "payload" in remaining, "q": "properties" in remaining},
    )


def commit_create(conn: sqlite3.Connection, work: LocalWork, record: RecordLike) -> None:
    """The server created ``work``'s record as ``record``: re-key everything to the server
    id in this one transaction."""
    old, new = work.record_id, record.id
    conn.execute("INSERT OR IGNORE INTO datasets (id) VALUES (?)", (record.dataset_id,))
    conn.execute(MIRROR_UPSERT, _mirror_row(record))
    conn.execute(
        "INSERT OR REPLACE INTO id_map (provisional_id, server_id, mapped_at) VALUES (?, ?, ?)",
        (old, new, now_ts()),
    )
    conn.execute("UPDATE changes SET record_id = ? WHERE record_id = ?", (new, old))
    conn.execute("UPDATE judgement_runs SET record_id = ? WHERE record_id = ?", (new, old))
    _mark(conn, work.change_ids, "pushed")
    conn.execute(
        "UPDATE changes SET base_updated_at = ? WHERE record_id = ? AND state = 'pending'",
        (record.updated_at, new),
    )
    conn.execute("UPDATE working SET record_id = ? WHERE record_id = ?", (new, old))
    _edits_after_post(conn, new, record)
    _rebase_or_drop(conn, new)


def _edits_after_post(conn: sqlite3.Connection, rid: str, record: RecordLike) -> None:
    """A create entry still pending was written after the POSTed body was read: what it
    holds becomes edits of the record the server created."""
    if "create" not in _remaining_kinds(conn, rid):
        return
    row = conn.execute(
        "SELECT dataset_id, payload, properties FROM working WHERE record_id = ?", (rid,)
    ).fetchone()
    conn.execute(
        "UPDATE changes SET state = 'superseded' WHERE record_id = ? AND kind = 'create' AND state = 'pending'",
        (rid,),
    )
    if row is None:
        return
    dataset_id, payload, properties = row
    for kind, local, server in (("payload", payload, record.payload), ("properties", properties, record.properties)):
        if local is not None and local != canonical(server):
            log_change(conn, rid, dataset_id, kind, local, record.updated_at)


def commit_push(
    conn: sqlite3.Connection,
    work: LocalWork,
    sent: dict[str, dict[str, Any]],
    rejected: dict[str, str],
    remote: Remote | None = None,
    *,
    unsent: Iterable[str] = (),
) -> None:
    """Parts in ``sent`` ("payload"/"properties" -> value) are on the server now; parts in
    ``rejected`` were refused with that message; parts in ``unsent`` did not go out (the
    request failed) and stay pending. The mirror takes what the server now holds:
    ``remote`` (the state the push was planned against) with the sent parts; its new
    ``updated_at`` is learned from the next listing or GET."""
    unsent = set(unsent)
    if remote is not None:
        conn.execute(
            "UPDATE mirror SET payload = ?, properties = ?, updated_at = ?, deleted_at = NULL WHERE id = ?",
            (
                canonical(sent.get("payload", remote.content.payload)),
                canonical(sent.get("properties", remote.content.properties)),
                remote.updated_at,
                work.record_id,
            ),
        )
    else:
        for kind, value in sent.items():
            conn.execute(f"UPDATE mirror SET {kind} = ? WHERE id = ?", (canonical(value), work.record_id))
    kinds_of = _kinds_of(conn, work.change_ids)
    for kind, message in rejected.items():
        _reject_part(conn, work.record_id, [i for i, k in kinds_of.items() if k == kind], kind, message)
    _mark(conn, [i for i, k in kinds_of.items() if k not in rejected and k not in unsent], "pushed")
    _rebase_or_drop(conn, work.record_id)


def commit_delete(conn: sqlite3.Connection, works: Iterable[LocalWork]) -> None:
    for work in works:
        _mark(conn, work.change_ids, "pushed")
        conn.execute("DELETE FROM working WHERE record_id = ?", (work.record_id,))
        conn.execute("DELETE FROM mirror WHERE id = ?", (work.record_id,))


def commit_settle(conn: sqlite3.Connection, work: LocalWork, *, remote_gone: bool) -> None:
    """The server already holds what the work wanted."""
    _mark(conn, work.change_ids, "pushed")
    if remote_gone:
        conn.execute("DELETE FROM working WHERE record_id = ?", (work.record_id,))
        conn.execute("DELETE FROM mirror WHERE id = ?", (work.record_id,))
    else:
        _rebase_or_drop(conn, work.record_id)


def commit_conflict(conn: sqlite3.Connection, work: LocalWork, parts: tuple[str, ...]) -> None:
    conn.execute(
        """UPDATE working SET state = 'conflict', conflict_parts = ?, detected_at = ?
           WHERE record_id = ? AND state = 'pending'""",
        (canonical(list(parts)), now_ts(), work.record_id),
    )


def commit_rejected_work(conn: sqlite3.Connection, work: LocalWork, message: str) -> None:
    """The server refused a create or a delete."""
    kinds_of = _kinds_of(conn, work.change_ids)
    if work.kind == "create":
        _mark(conn, work.change_ids, "rejected", message)
        conn.execute("DELETE FROM working WHERE record_id = ?", (work.record_id,))
        return
    _reject_part(conn, work.record_id, list(kinds_of), "delete", message)


def _kinds_of(conn: sqlite3.Connection, ids: tuple[int, ...]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(
        conn.execute(f"SELECT id, kind FROM changes WHERE id IN ({','.join('?' * len(ids))})", ids)
    )


def _reject_part(conn: sqlite3.Connection, rid: str, ids: list[int], kind: str, message: str) -> None:
    """A refused part goes back to the remote value; its body stays in the log."""
    _mark(conn, ids, "rejected", message)
    column = {"payload": "payload = NULL", "properties": "properties = NULL", "delete": "deleted = 0"}[kind]
    conn.execute(f"UPDATE working SET {column} WHERE record_id = ?", (rid,))
    conn.execute(
        """DELETE FROM working WHERE record_id = ? AND payload IS NULL AND properties IS NULL
           AND deleted = 0 AND is_create = 0
           AND NOT EXISTS (SELECT 1 FROM changes WHERE record_id = ? AND state IN ('pending', 'in_flight'))""",
        (rid, rid),
    )


def mark_in_flight(conn: sqlite3.Connection, works: Iterable[LocalWork]) -> None:
    """Committed before a create's POST: a crash after the POST is recognised later."""
    for work in works:
        conn.execute(
            f"""UPDATE changes SET state = 'in_flight'
                WHERE kind = 'create' AND state = 'pending'
                  AND id IN ({','.join('?' * len(work.change_ids))})""",
            work.change_ids,
        )


def settle_remote_gone(conn: sqlite3.Connection, record_ids: Iterable[str]) -> tuple[int, int]:
    """Records the server no longer has. Without local work they simply go; with a
    local delete they are done; with a local edit they become conflicts (the mirror keeps
    a tombstone). Returns (removed, new conflicts)."""
    removed = conflicts = 0
    for rid in record_ids:
        state = conn.execute("SELECT state FROM working WHERE record_id = ?", (rid,)).fetchone()
        if state is None:
            conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
            removed += 1
            continue
        conn.execute(
            "UPDATE mirror SET deleted_at = COALESCE(deleted_at, ?) WHERE id = ?", (now_ts(), rid)
        )
        works = load_work(conn, [rid], state=state[0])
        if not works:
            continue
        if state[0] == "conflict":
            if works[0].kind == "delete":  # the conflict dissolves: deleted on both sides
                commit_settle(conn, works[0], remote_gone=True)
                removed += 1
            continue
        action = plan_record(works[0], None)
        if isinstance(action, Conflict):
            commit_conflict(conn, works[0], action.parts)
            conflicts += 1
        elif isinstance(action, Settle):
            commit_settle(conn, works[0], remote_gone=True)
            removed += 1
    return removed, conflicts


def creates_in_flight(conn: sqlite3.Connection) -> set[str]:
    return {
        r[0]
        for r in conn.execute("SELECT record_id FROM changes WHERE kind = 'create' AND state = 'in_flight'")
    }


def has_in_flight_creates(conn: sqlite3.Connection, dataset_id: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM changes WHERE dataset_id = ? AND kind = 'create' AND state = 'in_flight' LIMIT 1",
            (dataset_id,),
        ).fetchone()
        is not None
    )


def adopt_created(
    conn: sqlite3.Connection, dataset_id: str, candidates: Iterable[RecordLike]
) -> int:
    """Creates left in flight by an interrupted sync: a listed record that this store has
    never seen, with exactly the body that was POSTed, is that create. Matched one to one,
    oldest first."""
    in_flight = conn.execute(
        """SELECT id, record_id, body FROM changes
           WHERE dataset_id = ? AND kind = 'create' AND state = 'in_flight' ORDER BY id""",
        (dataset_id,),
    ).fetchall()
    if not in_flight:
        return 0
    unmatched = sorted(candidates, key=lambda r: (r.created_at, r.id))
    adopted = 0
    for change_id, rid, body in in_flight:
        wanted = json.loads(body)
        for index, record in enumerate(unmatched):
            if json_equal(record.payload, wanted["payload"]) and json_equal(
                record.properties, wanted.get("properties") or {}
            ):
                works = [w for w in load_work(conn, [rid]) if w.kind == "create"]
                work = works[0] if works else _bare_create(rid, dataset_id, change_id)
                commit_create(conn, work, record)
                del unmatched[index]
                adopted += 1
                break
    return adopted


def _bare_create(rid: str, dataset_id: str, change_id: int) -> LocalWork:
    return LocalWork(rid, dataset_id, "create", None, None, None, None, (change_id,))


def conflict_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM working WHERE state = 'conflict'").fetchone()[0]

