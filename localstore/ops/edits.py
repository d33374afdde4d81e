"""Local edits: each one validates its input, then runs one transition of the change
log's owner (localstore.store.ledger) in a transaction of its own. Nothing here talks to
the network.

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

from localstore.core.ids import parse_uuid
from localstore.core.jsonvalue import pretty
from localstore.errors import UsageError
from localstore.store import ledger
from localstore.store.db import Store
from localstore.store.ledger import DeleteResult


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
        rid = resolve_record_id(conn, record_id)
        return EditResult(rid, ledger.edit(conn, rid, payload, properties))


def set_payload(store: Store, record_id: str, payload: Mapping[str, Any]) -> EditResult:
    return edit_record(store, record_id, payload=payload)


def set_properties(store: Store, record_id: str, updates: Mapping[str, Any]) -> EditResult:
    """Set some property keys; the others stay."""
    validate_object(dict(updates), "properties")
    with store.transaction() as conn:
        rid = resolve_record_id(conn, record_id)
        _, current = ledger.current(conn, rid)
        return EditResult(rid, ledger.edit(conn, rid, None, {**current, **updates}))


def unset_properties(store: Store, record_id: str, keys: Iterable[str]) -> EditResult:
    keys = list(keys)
    if not keys:
        raise UsageError("give at least one property KEY to unset")
    with store.transaction() as conn:
        rid = resolve_record_id(conn, record_id)
        _, current = ledger.current(conn, rid)
        missing = [k for k in keys if k not in current]
        if missing:
            raise UsageError(
                f"record {rid} has no property {', '.join(missing)}; "
                "`localstore show` lists its properties"
            )
        remaining = {k: v for k, v in current.items() if k not in keys}
        return EditResult(rid, ledger.edit(conn, rid, None, remaining))


def edit_in_editor(store: Store, record_id: str, *, editor: str | None = None) -> EditResult:
    """Open ``{"payload": …, "properties": …}`` in $EDITOR (click.edit) and queue what
    changed. An unchanged buffer queues nothing; an invalid one raises UsageError."""
    import click

    with store.transaction() as conn:
        rid = resolve_record_id(conn, record_id)
        payload, properties = ledger.current(conn, rid)
    before = pretty({"payload": payload, "properties": properties})
    after = click.edit(before, editor=editor, extension=".json", require_save=True)
    if after is None or after == before:
        return EditResult(rid, ())
    try:
        edited = parse_json_object_text(after, "the edited record")
        if set(edited) != {"payload", "properties"}:
            raise UsageError('the edited record must hold exactly "payload" and "properties"')
        for part in ("payload", "properties"):
            validate_object(edited[part], f'the edited record\'s "{part}"')
    except UsageError as exc:
        raise UsageError(f"{exc}; nothing was queued") from None
    return edit_record(store, rid, payload=edited["payload"], properties=edited["properties"])


def delete_records(store: Store, record_ids: Iterable[str]) -> list[DeleteResult]:
    """Queue deletes (all or nothing). A create never sent is simply dropped."""
    ids = [parse_uuid(r) for r in record_ids]
    if not ids:
        raise UsageError("give at least one RECORD_ID to delete")
    with store.transaction() as conn:
        return [ledger.delete(conn, resolve_record_id(conn, given)) for given in ids]


def add_record(
    store: Store,
    dataset_id: str,
    payload: Mapping[str, Any],
    properties: Mapping[str, Any] | None = None,
    *,
    record_id: str | None = None,
) -> str:
    """Create a record offline; returns its provisional id (a UUID: ``record_id`` when
    given, see ledger.create)."""
    payload = validate_object(dict(payload), "payload")
    properties = validate_object(dict(properties or {}), "properties")
    dataset = parse_uuid(dataset_id, what="dataset id")
    with store.transaction() as conn:
        return ledger.create(conn, dataset, payload, properties, record_id=record_id)


def revert(store: Store, record_id: str) -> str:
    """Drop a record's local changes (pending or rejected) and its conflict, if any."""
    with store.transaction() as conn:
        rid = resolve_record_id(conn, record_id)
        ledger.revert(conn, rid)
    return rid
