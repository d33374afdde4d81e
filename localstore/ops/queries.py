"""Read-only questions to the store: records, status, the change log, diffs, conflicts,
and user SQL (read-only by SQLite's own mechanism unless asked to write)."""

from __future__ import annotations

import difflib
import json
import re
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from localstore.core.ids import parse_uuid
from localstore.core.jsonvalue import json_equal, pretty
from localstore.core.merge import MISSING, PAYLOAD, property_key, property_part
from localstore.errors import NotFoundLocally, UsageError
from localstore.ops.edits import resolve_record_id
from localstore.ops.sqltext import first_word, looks_like_write
from localstore.store.db import Store, connect_readonly

if TYPE_CHECKING:
    from localstore.store.ledger.bulk import Queued

RECORD_COLUMNS = "id, dataset_id, created_at, updated_at, deleted_at, source, payload, properties, sync_state"


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("payload", "properties"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def list_records(
    store: Store, dataset_id: str | None = None, *, limit: int | None = None
) -> list[dict[str, Any]]:
    sql = f"SELECT {RECORD_COLUMNS} FROM records"
    params: list[Any] = []
    if dataset_id:
        sql += " WHERE dataset_id = ?"
        params.append(parse_uuid(dataset_id, what="dataset id"))
    sql += " ORDER BY dataset_id, created_at, id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [_decode(r) for r in store.query(sql, params)]


def get_record(store: Store, record_id: str) -> dict[str, Any]:
    """The record as the user sees it, plus its pending change kinds and conflict."""
    rid = resolve_record_id(store.conn, record_id)
    rows = store.query(f"SELECT {RECORD_COLUMNS} FROM records WHERE id = ?", (rid,))
    if not rows:
        raise NotFoundLocally(
            f"record {rid} is not in the store; `localstore fetch {rid}` mirrors it"
        )
    record = _decode(rows[0])
    record["pending"] = [
        r["kind"]
        for r in store.query(
            "SELECT kind FROM changes WHERE record_id = ? AND state IN ('pending', 'in_flight') ORDER BY id",
            (rid,),
        )
    ]
    conflict = store.query("SELECT parts FROM conflicts WHERE record_id = ?", (rid,))
    if conflict:
        record["conflict"] = json.loads(conflict[0]["parts"])
    return record


@dataclass
class Status:
    pending: int
    conflicts: int
    rejected: int
    last_sync: str | None  # when the last successful sync (ok, or ended with conflicts) finished
    pending_by_kind: dict[str, int] = field(default_factory=dict)
    pending_records: dict[str, int] = field(default_factory=dict)
    records: int = 0
    tracked_datasets: int = 0
    # with details: the latest sync when it did not succeed (failed, interrupted, killed)
    last_attempt: dict[str, Any] | None = None
    # with details, up to ``limit`` each: {record_id, dataset_id, kind, parts, sending}
    changes: list[dict[str, Any]] = field(default_factory=list)
    conflicted: list[dict[str, Any]] = field(default_factory=list)  # {record_id, dataset_id, parts}
    rejections: list[dict[str, Any]] = field(default_factory=list)  # {change_id, record_id, kind, error, created_at}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(store: Store, *, details: bool = False, limit: int | None = None) -> Status:
    """Counts come from indexed tables only, so this stays quick on a large store.
    ``details`` adds the records behind them (``limit`` of each kind) and the last
    unsuccessful sync attempt."""
    by_kind = dict(
        store.conn.execute(
            """SELECT c.kind, count(*) FROM changes AS c JOIN working AS w ON w.record_id = c.record_id
               WHERE c.state IN ('pending', 'in_flight') AND w.state = 'pending' GROUP BY c.kind"""
        ).fetchall()
    )
    per_record = dict(
        store.conn.execute(
            """SELECT CASE WHEN is_create THEN 'create' WHEN deleted THEN 'delete' ELSE 'update' END,
                      count(*)
               FROM working AS w WHERE state = 'pending'
                 AND EXISTS (SELECT 1 FROM changes AS c WHERE c.record_id = w.record_id
                             AND c.state IN ('pending', 'in_flight'))
               GROUP BY 1"""
        ).fetchall()
    )
    result = Status(
        pending=sum(per_record.values()),
        conflicts=store.scalar("SELECT count(*) FROM working WHERE state = 'conflict'"),
        rejected=store.scalar("SELECT count(*) FROM changes WHERE state = 'rejected'"),
        last_sync=store.scalar(
            """SELECT finished_at FROM sync_runs WHERE status IN ('ok', 'conflicts')
               AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1"""
        ),
        pending_by_kind=by_kind,
        pending_records=per_record,
        records=store.scalar(  # count(*) reads the narrowest index; tombstones have their own
            "SELECT (SELECT count(*) FROM mirror) - (SELECT count(*) FROM mirror WHERE deleted_at IS NOT NULL)"
        ),
        tracked_datasets=store.scalar("SELECT count(*) FROM datasets WHERE tracked = 1"),
    )
    return _status_details(store, result, limit) if details else result


def _status_details(store: Store, result: Status, limit: int | None) -> Status:
    bound = "" if limit is None else f" LIMIT {int(limit)}"
    attempt = store.query(
        """SELECT started_at, finished_at, status, message FROM sync_runs
           WHERE status NOT IN ('ok', 'conflicts') ORDER BY id DESC LIMIT 1"""
    )
    latest_ok = store.scalar("SELECT max(id) FROM sync_runs WHERE status IN ('ok', 'conflicts')") or 0
    if attempt and store.scalar("SELECT max(id) FROM sync_runs") > latest_ok:
        result.last_attempt = attempt[0]
    for row in store.query(
        f"""SELECT w.record_id, w.dataset_id, w.is_create, w.deleted, w.payload, w.properties,
                   w.base_properties,
                   EXISTS (SELECT 1 FROM changes AS c WHERE c.record_id = w.record_id
                           AND c.state = 'in_flight') AS sending
            FROM working AS w WHERE w.state = 'pending' AND EXISTS (
                SELECT 1 FROM changes AS c WHERE c.record_id = w.record_id
                AND c.state IN ('pending', 'in_flight'))
            ORDER BY w.dataset_id, w.record_id{bound}"""
    ):
        kind = "create" if row["is_create"] else "delete" if row["deleted"] else "update"
        parts: list[str] = []
        if kind == "update":
            parts = (["/payload"] if row["payload"] is not None else []) + [
                property_part(key) for key in _changed_keys(row["base_properties"], row["properties"])
            ]
        result.changes.append({"record_id": row["record_id"], "dataset_id": row["dataset_id"],
                               "kind": kind, "parts": parts, "sending": bool(row["sending"])})
    for row in store.query(
        f"SELECT record_id, dataset_id, conflict_parts FROM working WHERE state = 'conflict' ORDER BY record_id{bound}"
    ):
        result.conflicted.append({"record_id": row["record_id"], "dataset_id": row["dataset_id"],
                                  "parts": json.loads(row["conflict_parts"] or "[]")})
    result.rejections = store.query(
        f"""SELECT id AS change_id, record_id, kind, error, created_at FROM changes
            WHERE state = 'rejected' ORDER BY id DESC{bound}"""
    )
    return result


def _changed_keys(base: str | None, local: str | None) -> list[str]:
    """The property keys a local properties map adds, changes or removes."""
    if local is None or base is None:
        return []
    before, after = json.loads(base), json.loads(local)
    return sorted(k for k in before.keys() | after.keys() if k not in before or k not in after
                  or not json_equal(before[k], after[k]))


def change_log(
    store: Store, *, record_id: str | None = None, limit: int | None = 50
) -> list[dict[str, Any]]:
    """The change log, newest first."""
    sql = "SELECT id, record_id, dataset_id, kind, body, base_updated_at, state, error, created_at, pushed_at FROM changes"
    params: list[Any] = []
    if record_id:
        sql += " WHERE record_id = ?"
        params.append(resolve_record_id(store.conn, record_id))
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = store.query(sql, params)
    for row in rows:
        if row["body"] is not None:
            row["body"] = json.loads(row["body"])
    return rows


def diff(store: Store, record_id: str | None = None) -> str:
    """A unified diff of base vs working JSON for each record with local changes; for a
    record in conflict, two: base → ours and base → theirs."""
    sql = """SELECT w.record_id, w.state, w.deleted, w.is_create, w.payload, w.properties,
                    w.base_payload, w.base_properties,
                    COALESCE(w.base_properties_at, w.base_payload_at) AS base_updated_at
             FROM working AS w"""
    params: list[Any] = []
    if record_id:
        rid = resolve_record_id(store.conn, record_id)
        sql += " WHERE w.record_id = ?"
        params.append(rid)
    rows = store.query(sql + " ORDER BY w.record_id", params)
    if record_id and not rows:
        get_record(store, record_id)  # raises for unknown ids
        return ""
    out: list[str] = []
    conflicts = {c["record_id"]: c for c in conflict_list(store)} if any(
        r["state"] == "conflict" for r in rows) else {}
    for row in rows:
        rid = row["record_id"]
        if rid in conflicts:
            out.extend(_conflict_diff(conflicts[rid]))
            continue
        if row["is_create"] or row["base_payload"] is None:
            before: list[str] = []
            old_name = "/dev/null"
        else:
            base = {"payload": json.loads(row["base_payload"]), "properties": json.loads(row["base_properties"])}
            before = pretty(base).splitlines(keepends=True)
            old_name = f"a/{rid} (remote {row['base_updated_at']})"
        if row["deleted"]:
            after: list[str] = []
            new_name = "/dev/null"
        else:
            local = {
                "payload": json.loads(row["payload"] or row["base_payload"]),
                "properties": json.loads(row["properties"] or row["base_properties"]),
            }
            after = pretty(local).splitlines(keepends=True)
            new_name = f"b/{rid} (local)"
        out.extend(difflib.unified_diff(before, after, old_name, new_name))
    return "".join(out)


def _conflict_diff(conflict: dict[str, Any]) -> list[str]:
    """base → ours, then base → theirs (a deleted side is /dev/null)."""
    rid, base = conflict["record_id"], conflict["base"]
    if conflict["parts"] == ["create-unconfirmed"]:  # no base: a create that may have landed
        base = None
    before = [] if base is None else pretty(_content_of(base)).splitlines(keepends=True)
    old_name = "/dev/null" if base is None else f"a/{rid} (base: the server's when you edited, {base['updated_at']})"
    out: list[str] = []
    for side, label in (("local", "ours: your version"), ("remote", "theirs: the server's now")):
        snapshot = conflict[side]
        after = [] if snapshot is None else pretty(_content_of(snapshot)).splitlines(keepends=True)
        when = f", {snapshot['updated_at']}" if snapshot is not None and snapshot.get("updated_at") else ""
        new_name = "/dev/null" if snapshot is None else f"b/{rid} ({label}{when})"
        out.extend(difflib.unified_diff(before, after, old_name, new_name))
    return out


def _content_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {"payload": snapshot["payload"], "properties": snapshot["properties"]}


def conflict_list(store: Store) -> list[dict[str, Any]]:
    """Open conflicts with their base, local and remote snapshots, and ``details``: each
    conflicting part with its base, ours and theirs values."""
    rows = store.query(
        "SELECT record_id, dataset_id, parts, base, local, remote, detected_at FROM conflicts ORDER BY detected_at, record_id"
    )
    for row in rows:
        for key in ("parts", "base", "local", "remote"):
            if row[key] is not None:
                row[key] = json.loads(row[key])
        row["details"] = conflict_details(row)
    return rows


def conflict_details(conflict: dict[str, Any]) -> list[dict[str, Any]]:
    """Each conflicting part: ``{"part", "base", "ours", "theirs"}``, a side left out
    where the part does not exist there (a property key absent, the record deleted; a
    create that may have landed has no base and an unknown theirs)."""
    out = []
    for part in conflict["parts"]:
        entry: dict[str, Any] = {"part": part}
        for side, snapshot in (("base", conflict["base"]), ("ours", conflict["local"]), ("theirs", conflict["remote"])):
            if part == "create-unconfirmed" and side == "base":
                continue
            value = _part_value(snapshot, part)
            if value is not MISSING:
                entry[side] = value
        out.append(entry)
    return out


def _part_value(snapshot: dict[str, Any] | None, part: str) -> Any:
    if snapshot is None:
        return MISSING
    if part == PAYLOAD:
        return snapshot["payload"]
    key = property_key(part)
    if key is None:  # the whole record: delete-vs-edit, edit-vs-delete, create-unconfirmed
        return _content_of(snapshot)
    return snapshot["properties"].get(key, MISSING)


# ------------------------------------------------------------------ user SQL


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    queued: Queued | None = None  # a write through `records`: what it queued

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


READONLY_HINT = "`localstore sql` is read-only unless you pass --write"


def run_sql(store: Store, sql: str, params: tuple[Any, ...] = (), *, write: bool = False) -> QueryResult:
    """Run one statement. Without ``write`` it runs on a ``mode=ro`` connection, so SQLite
    itself refuses any change; with ``write`` it runs in a transaction of its own, may
    write through the ``records`` view only, and what it writes is queued as changes
    (localstore.ops.sqlwrite)."""
    if not sql.strip():
        raise UsageError("the query is empty")
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the query holds bytes that are not UTF-8 text") from None
    if "search_" in sql.lower():  # the full-text index: up to date before it is read
        from localstore.ops.search import catch_up

        catch_up(store)
    if write:
        from localstore.ops.sqlwrite import run_write

        done = run_write(store, sql, params)
        return QueryResult(done.columns, done.rows, done.queued)
    if looks_like_write(sql):
        raise UsageError(f"{READONLY_HINT}; nothing was changed")
    conn = connect_readonly(store.path)
    try:
        cursor = conn.execute(sql, params)
        rows = cursor.fetchall()
    except sqlite3.OperationalError as exc:
        message = str(exc)
        if "readonly" in message or "read-only" in message or "because it is a view" in message:
            raise UsageError(f"{READONLY_HINT} (SQLite: {message}); nothing was changed") from None
        if message == "disk I/O error" and first_word(sql) == "pragma":
            # e.g. `pragma journal_mode(delete)`: SQLite reports the read-only file this way
            raise UsageError(f"the store is opened read-only: {READONLY_HINT}; nothing was changed") from None
        raise UsageError(f"SQL error: {message}") from None
    except sqlite3.DatabaseError as exc:
        message = str(exc)
        if "authoriz" in message and re.search(r"\b(attach|detach|vacuum)\b", sql, re.IGNORECASE):
            # refused by connect_readonly's authorizer
            raise UsageError(f"{READONLY_HINT} (SQLite: {message}); nothing was changed") from None
        raise UsageError(f"SQL error: {message}") from None
    except sqlite3.Error as exc:
        raise UsageError(f"SQL error: {exc}") from None
    finally:
        conn.close()
    return QueryResult([d[0] for d in cursor.description or ()], rows)
