"""Local edits: each one validates its input, then updates the working copy and appends
to the change log in a single transaction. Nothing here talks to the network.

Coalescing: at most one pending change-log entry per (record, kind) — a newer edit marks
the older entry ``superseded`` (it stays in the log as history). A record created
offline and not yet sent keeps a single pending ``create`` entry with its full body.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import NotFoundLocally, UsageError
from .ids import new_provisional_id, parse_uuid
from .jsonutil import canonical, pretty
from .store import Store
from .timeutil import now_ts


@dataclass(frozen=True)
class EditResult:
    record_id: str
    kinds: tuple[str, ...]  # the change kinds queued; empty when nothing changed


# ------------------------------------------------------------------ validation


def validate_object(value: Any, what: str) -> dict[str, Any]:
    """A JSON object with only JSON values (no NaN/Infinity), or UsageError."""
    if not isinstance(value, dict):
        kind = type(value).__name__ if value is not None else "null"
        raise UsageError(f"{what} must be a JSON object, got {kind}")
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate: a "\ud800" escape, or bytes that were not UTF-8 on the command line
        raise UsageError(f"{what} holds text that is not valid Unicode (UTF-8)") from None
    return value


def parse_json_object_text(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None
    return validate_object(value, what)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def parse_property_value(text: str) -> Any:
    """``set KEY=VALUE``: VALUE is parsed as JSON, else kept as a string."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def parse_assignments(pairs: Iterable[str]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{pair!r} is not KEY=VALUE (e.g. label=good or score=0.9)")
        updates[key] = parse_property_value(value)
    if not updates:
        raise UsageError("give at least one KEY=VALUE")
    return updates


# ------------------------------------------------------------------ ids


def resolve_record_id(conn: sqlite3.Connection, record_id: str) -> str:
    """Canonical id; a provisional id of a create that was since pushed maps to the server id."""
    current = parse_uuid(record_id)
    for _ in range(16):  # a record re-created by `resolve --ours` maps twice
        mapped = conn.execute(
            "SELECT server_id FROM id_map WHERE provisional_id = ?", (current,)
        ).fetchone()
        if mapped is None:
            break
        current = mapped[0]
    return current


# ------------------------------------------------------------------ edits


def edit_record(
    store: Store,
    record_id: str,
    *,
    payload: Mapping[str, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
) -> EditResult:
    """Replace the payload and/or the whole properties map; queues only the parts that
    differ from what the record holds locally now."""
    if payload is not None:
        payload = validate_object(dict(payload), "payload")
    if properties is not None:
        properties = validate_object(dict(properties), "properties")
    with store.transaction() as conn:
        row = _editable(conn, resolve_record_id(conn, record_id))
        return _edit(conn, row, payload, properties)


def set_payload(store: Store, record_id: str, payload: Mapping[str, Any]) -> EditResult:
    return edit_record(store, record_id, payload=payload)


def set_properties(store: Store, record_id: str, updates: Mapping[str, Any]) -> EditResult:
    """Set some property keys; the others stay."""
    validate_object(dict(updates), "properties")
    with store.transaction() as conn:
        row = _editable(conn, resolve_record_id(conn, record_id))
        current = json.loads(row["properties"])
        return _edit(conn, row, None, {**current, **updates})


def unset_properties(store: Store, record_id: str, keys: Iterable[str]) -> EditResult:
    keys = list(keys)
    if not keys:
        raise UsageError("give at least one property KEY to unset")
    with store.transaction() as conn:
        row = _editable(conn, resolve_record_id(conn, record_id))
        current = json.loads(row["properties"])
        missing = [k for k in keys if k not in current]
        if missing:
            raise UsageError(
                f"record {row['record_id']} has no property {', '.join(missing)}; "
                "`localstore show` lists its properties"
            )
        return _edit(conn, row, None, {k: v for k, v in current.items() if k not in keys})


def _edit(
    conn: sqlite3.Connection,
    row: dict[str, Any],
    payload: dict[str, Any] | None,
    properties: dict[str, Any] | None,
) -> EditResult:
    new_payload = None if payload is None else canonical(payload)
    new_properties = None if properties is None else canonical(properties)
    if new_payload == row["payload"]:
        new_payload = None
    if new_properties == row["properties"]:
        new_properties = None
    kinds = tuple(
        kind for kind, value in (("payload", new_payload), ("properties", new_properties)) if value
    )
    if kinds:
        _apply(conn, row, new_payload, new_properties)
    return EditResult(row["record_id"], kinds)


def edit_in_editor(store: Store, record_id: str, *, editor: str | None = None) -> EditResult:
    """Open ``{"payload": …, "properties": …}`` in $EDITOR (click.edit) and queue what
    changed. An unchanged buffer queues nothing; an invalid one raises UsageError."""
    import click

    with store.transaction() as conn:
        row = _editable(conn, resolve_record_id(conn, record_id))
    before = pretty({"payload": json.loads(row["payload"]), "properties": json.loads(row["properties"])})
    after = click.edit(before, editor=editor, extension=".json", require_save=True)
    if after is None or after == before:
        return EditResult(row["record_id"], ())
    try:
        edited = parse_json_object_text(after, "the edited record")
        if set(edited) != {"payload", "properties"}:
            raise UsageError('the edited record must hold exactly "payload" and "properties"')
        for part in ("payload", "properties"):
            validate_object(edited[part], f'the edited record\'s "{part}"')
    except UsageError as exc:
        raise UsageError(f"{exc}; nothing was queued") from None
    return edit_record(store, record_id, payload=edited["payload"], properties=edited["properties"])


def delete_records(store: Store, record_ids: Iterable[str]) -> list[str]:
    """Queue deletes (all or nothing). A create never sent is simply dropped."""
    ids = [parse_uuid(r) for r in record_ids]
    if not ids:
        raise UsageError("give at least one RECORD_ID to delete")
    done: list[str] = []
    with store.transaction() as conn:
        for given in ids:
            rid = resolve_record_id(conn, given)
            row = _editable(conn, rid)
            if row["is_create"] and not _in_flight(conn, rid):
                _close_entries(conn, rid, "reverted", "deleted before it was sent")
                conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
            else:
                _ensure_working(conn, row)
                _supersede(conn, rid, ("payload", "properties"))
                # a create in flight keeps its body until the server id is known
                conn.execute(
                    """UPDATE working SET deleted = 1,
                              payload = CASE WHEN is_create THEN payload END,
                              properties = CASE WHEN is_create THEN properties END
                       WHERE record_id = ?""",
                    (rid,),
                )
                log_change(conn, rid, row["dataset_id"], "delete", None, row["base_updated_at"])
            done.append(rid)
    return done


def add_record(
    store: Store,
    dataset_id: str,
    payload: Mapping[str, Any],
    properties: Mapping[str, Any] | None = None,
) -> str:
    """Create a record offline; returns its provisional id (a UUID)."""
    payload = validate_object(dict(payload), "payload")
    properties = validate_object(dict(properties or {}), "properties")
    dataset = parse_uuid(dataset_id, what="dataset id")
    rid = new_provisional_id()
    with store.transaction() as conn:
        known = conn.execute("SELECT 1 FROM datasets WHERE id = ?", (dataset,)).fetchone()
        if not known:
            raise NotFoundLocally(
                f"dataset {dataset} is not in the store; run `localstore pull {dataset}` first"
            )
        now = now_ts()
        conn.execute(
            """INSERT INTO working (record_id, dataset_id, payload, properties, is_create, created_at)
               VALUES (?, ?, ?, ?, 1, ?)""",
            (rid, dataset, canonical(payload), canonical(properties), now),
        )
        log_change(conn, rid, dataset, "create", canonical({"payload": payload, "properties": properties}), None)
    return rid


def revert(store: Store, record_id: str) -> str:
    """Drop a record's local changes (pending or rejected) and its conflict, if any."""
    with store.transaction() as conn:
        rid = resolve_record_id(conn, record_id)
        row = conn.execute("SELECT is_create FROM working WHERE record_id = ?", (rid,)).fetchone()
        rejected = conn.execute(
            "SELECT 1 FROM changes WHERE record_id = ? AND state = 'rejected'", (rid,)
        ).fetchone()
        if row is None and not rejected:
            raise UsageError(f"record {rid} has no local changes to revert")
        if _in_flight(conn, rid):
            raise UsageError(
                f"record {rid} is being created on the server; revert it after the next sync"
            )
        _close_entries(conn, rid, "reverted", None, states=("pending", "rejected"))
        conn.execute("DELETE FROM working WHERE record_id = ?", (rid,))
        _drop_tombstone(conn, rid)
    return rid


# ------------------------------------------------------------------ internals


def _editable(conn: sqlite3.Connection, rid: str) -> dict[str, Any]:
    """The record as the user sees it, with its working-copy bookkeeping; raises when it
    cannot be edited now."""
    cur = conn.execute(
        """SELECT m.id AS mirror_id, m.dataset_id AS m_dataset, m.deleted_at,
                  m.payload AS m_payload, m.properties AS m_properties, m.updated_at,
                  w.record_id AS w_id, w.dataset_id AS w_dataset, w.payload AS w_payload,
                  w.properties AS w_properties, w.deleted, w.is_create, w.state,
                  w.base_updated_at
           FROM (SELECT ? AS rid) AS q
           LEFT JOIN mirror AS m ON m.id = q.rid
           LEFT JOIN working AS w ON w.record_id = q.rid""",
        (rid,),
    )
    names = [d[0] for d in cur.description]
    r = dict(zip(names, cur.fetchone(), strict=True))
    if r["w_id"] is None and (r["mirror_id"] is None or r["deleted_at"] is not None):
        raise NotFoundLocally(
            f"record {rid} is not in the store; `localstore fetch {rid}` mirrors it"
        )
    if r["w_id"] is not None:
        if r["state"] == "conflict":
            raise UsageError(
                f"record {rid} has a conflict; settle it first with `localstore resolve {rid} --ours|--theirs|--file F`"
            )
        if r["deleted"]:
            raise UsageError(
                f"record {rid} is deleted locally; `localstore revert {rid}` undoes that"
            )
    return {
        "record_id": rid,
        "dataset_id": r["w_dataset"] or r["m_dataset"],
        "has_working": r["w_id"] is not None,
        "is_create": bool(r["is_create"]),
        "payload": r["w_payload"] if r["w_payload"] is not None else r["m_payload"],
        "properties": r["w_properties"] if r["w_properties"] is not None else r["m_properties"],
        "base_updated_at": r["base_updated_at"] if r["w_id"] is not None else r["updated_at"],
    }


def _ensure_working(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    if row["has_working"]:
        return
    conn.execute(
        """INSERT INTO working (record_id, dataset_id, base_updated_at, base_payload,
                                base_properties, created_at)
           SELECT id, dataset_id, updated_at, payload, properties, ? FROM mirror WHERE id = ?""",
        (now_ts(), row["record_id"]),
    )
    row["has_working"] = True


def _apply(
    conn: sqlite3.Connection, row: dict[str, Any], payload: str | None, properties: str | None
) -> None:
    rid = row["record_id"]
    if row["is_create"] and not _in_flight(conn, rid):
        conn.execute(
            """UPDATE working SET payload = COALESCE(?, payload),
                                  properties = COALESCE(?, properties)
               WHERE record_id = ?""",
            (payload, properties, rid),
        )
        body = conn.execute(
            "SELECT json_object('payload', json(payload), 'properties', json(properties)) FROM working WHERE record_id = ?",
            (rid,),
        ).fetchone()[0]
        _supersede(conn, rid, ("create",))
        log_change(conn, rid, row["dataset_id"], "create", canonical(json.loads(body)), None)
        return
    _ensure_working(conn, row)
    for kind, value in (("payload", payload), ("properties", properties)):
        if value is None:
            continue
        conn.execute(f"UPDATE working SET {kind} = ? WHERE record_id = ?", (value, rid))
        _supersede(conn, rid, (kind,))
        log_change(conn, rid, row["dataset_id"], kind, value, row["base_updated_at"])


def _in_flight(conn: sqlite3.Connection, rid: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM changes WHERE record_id = ? AND state = 'in_flight'", (rid,)
        ).fetchone()
        is not None
    )


def _supersede(conn: sqlite3.Connection, rid: str, kinds: tuple[str, ...]) -> None:
    marks = ",".join("?" * len(kinds))
    conn.execute(
        f"UPDATE changes SET state = 'superseded' WHERE record_id = ? AND state = 'pending' AND kind IN ({marks})",
        (rid, *kinds),
    )


def _close_entries(
    conn: sqlite3.Connection,
    rid: str,
    state: str,
    error: str | None,
    *,
    states: tuple[str, ...] = ("pending",),
) -> None:
    marks = ",".join("?" * len(states))
    conn.execute(
        f"UPDATE changes SET state = ?, error = COALESCE(?, error) WHERE record_id = ? AND state IN ({marks})",
        (state, error, rid, *states),
    )


def _drop_tombstone(conn: sqlite3.Connection, rid: str) -> None:
    conn.execute("DELETE FROM mirror WHERE id = ? AND deleted_at IS NOT NULL", (rid,))


def log_change(
    conn: sqlite3.Connection,
    rid: str,
    dataset_id: str,
    kind: str,
    body: str | None,
    base_updated_at: str | None,
) -> None:
    conn.execute(
        """INSERT INTO changes (record_id, dataset_id, kind, body, base_updated_at, created_at)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (rid, dataset_id, kind, body, base_updated_at, now_ts()),
    )
