"""Edits of every record matching a condition: ``set``/``unset``/``rm``/``revert --where``.

The condition is an SQL expression on the ``records`` view, evaluated as ``judge
--where`` evaluates it (:func:`localstore.ops.judge.select_records`: on a read-only
connection). It is evaluated while the edit holds the store's write lock, so the records
it selects are the records the edit changes. All matching records are edited in one
transaction by the change log's owner (:mod:`localstore.store.ledger.bulk`): one refused
record (in conflict, say) refuses them all, and nothing is queued.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from localstore.errors import UsageError
from localstore.ops.edits import validate_object
from localstore.store import ledger
from localstore.store.db import Store
from localstore.store.jsontext import loads
from localstore.store.ledger import bulk as ledger_bulk
from localstore.store.ledger.bulk import Queued

SHOWN = 10  # ids a dry run prints
_IN_CHUNK = 500
CONFLICT_HINT = "leave conflicts out with --where \"(…) AND sync_state != 'conflict'\""


@dataclass
class BulkResult:
    """Records a --where matched; what was queued (None on a dry run)."""

    matched: int
    ids: list[str] = field(default_factory=list)
    queued: Queued | None = None
    reverted: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"matched": self.matched, "ids": self.ids}
        if self.queued is not None:
            out.update(self.queued.to_dict())
        return out


def matching(store: Store, where: str) -> list[str]:
    """Ids of the records matching ``where`` (judge's read-only evaluation)."""
    from localstore.ops.judge import select_records

    return select_records(store, where=where)


def _edit_guard(exc: UsageError) -> UsageError:
    hint = f" ({CONFLICT_HINT})" if "has a conflict" in str(exc) else ""
    return type(exc)(f"{exc}; nothing was queued{hint}")


def _properties(conn: sqlite3.Connection, ids: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, properties as the user sees them) for each id, in order."""
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start:start + _IN_CHUNK]
        found = dict(conn.execute(
            f"SELECT id, properties FROM records WHERE id IN ({','.join('?' * len(chunk))})", chunk
        ).fetchall())
        for rid in chunk:
            yield rid, loads(found[rid])


def _edit(
    store: Store, where: str, dry_run: bool,
    change: Any,  # (properties) -> new properties, or None when nothing changes
) -> BulkResult:
    if dry_run:
        ids = matching(store, where)
        return BulkResult(len(ids), ids)
    with store.transaction() as conn:
        ids = matching(store, where)
        rows = ((rid, None, change(props)) for rid, props in _properties(conn, ids))
        try:
            queued = ledger_bulk.edit_many(conn, rows)
        except UsageError as exc:
            raise _edit_guard(exc) from None
    return BulkResult(len(ids), ids[:SHOWN], queued)


def set_where(store: Store, where: str, updates: Mapping[str, Any], *, dry_run: bool = False) -> BulkResult:
    """``set KEY=VALUE… --where COND``: those keys on every matching record."""
    updates = validate_object(dict(updates), "properties")
    return _edit(store, where, dry_run, lambda props: {**props, **updates})


def unset_where(store: Store, where: str, keys: Iterable[str], *, dry_run: bool = False) -> BulkResult:
    """``unset KEY… --where COND``: records without any of the keys are left as they are."""
    keys = list(keys)
    if not keys:
        raise UsageError("give at least one property KEY to unset")

    def without(props: dict[str, Any]) -> dict[str, Any] | None:
        if not any(k in props for k in keys):
            return None
        return {k: v for k, v in props.items() if k not in keys}

    return _edit(store, where, dry_run, without)


def rm_where(store: Store, where: str, *, dry_run: bool = False) -> BulkResult:
    """``rm --where COND``: queue deletes of every matching record."""
    if dry_run:
        ids = matching(store, where)
        return BulkResult(len(ids), ids)
    with store.transaction() as conn:
        ids = matching(store, where)
        try:
            queued = ledger_bulk.delete_many(conn, ids)
        except UsageError as exc:
            raise _edit_guard(exc) from None
    return BulkResult(len(ids), ids[:SHOWN], queued)


# ------------------------------------------------------------------ revert

# `records` as revert sees it: pending deletes too (they are hidden from the view, and
# undoing `rm --where X` is `revert --where X`)
_REVERTIBLE = """WITH records AS (
    SELECT id, dataset_id, created_at, updated_at, deleted_at, source, payload, properties, sync_state
    FROM main.records
    UNION ALL
    SELECT w.record_id, w.dataset_id, COALESCE(m.created_at, w.created_at), m.updated_at, m.deleted_at,
           COALESCE(m.source, 'DIRECT_INPUT'), COALESCE(w.payload, m.payload, w.base_payload),
           COALESCE(w.properties, m.properties, w.base_properties), 'pending'
    FROM main.working AS w LEFT JOIN main.mirror AS m ON m.id = w.record_id
    WHERE w.deleted = 1 AND w.state = 'pending'
)
SELECT id FROM records WHERE (
{where}
) AND (id IN (SELECT record_id FROM main.working)
       OR id IN (SELECT record_id FROM main.changes WHERE state = 'rejected'))
ORDER BY dataset_id, created_at, id"""

_ALL_REVERTIBLE = """SELECT record_id FROM working
UNION SELECT record_id FROM changes WHERE state = 'rejected'
ORDER BY 1"""


def revertible(store: Store, where: str | None) -> list[str]:
    """Records with local work (a working copy or rejected changes) matching ``where``
    (None: all of them), pending deletes included."""
    if where is None:
        return [r[0] for r in store.conn.execute(_ALL_REVERTIBLE)]
    from localstore.ops.queries import run_sql

    if not where.strip():
        raise UsageError("--where is empty: give an SQL condition on the records view")
    try:
        result = run_sql(store, _REVERTIBLE.format(where=where))
    except UsageError as exc:
        raise UsageError(f"bad --where condition: {exc}") from None
    return list(dict.fromkeys(str(row[0]) for row in result.rows))


def revert_where(store: Store, where: str | None, *, dry_run: bool = False) -> BulkResult:
    """``revert --where COND`` / ``revert --all``: drop the local work of every matching
    record (pending or rejected changes, conflicts), one ``ledger.revert`` each, in one
    transaction."""
    if dry_run:
        ids = revertible(store, where)
        return BulkResult(len(ids), ids)
    with store.transaction() as conn:
        ids = revertible(store, where)
        try:
            for rid in ids:
                ledger.revert(conn, rid)
        except UsageError as exc:
            raise type(exc)(f"{exc}; nothing was reverted") from None
    return BulkResult(len(ids), ids[:SHOWN], reverted=len(ids))
