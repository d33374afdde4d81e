"""The mirror's writes: records as the server holds them (pull and sync share these)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from localstore.core.record import Record
from localstore.store.jsontext import canonical


def set_mirror_content(
    conn: sqlite3.Connection, rid: str, updated_at: str, payload: Any, properties: Any
) -> None:
    """The remote state a sync just read for a mirrored record (before writing to it)."""
    conn.execute(
        """UPDATE mirror SET updated_at = ?, payload = ?, properties = ?, deleted_at = NULL
           WHERE id = ?""",
        (updated_at, canonical(payload), canonical(properties), rid),
    )


def upsert_mirror_rows(conn: sqlite3.Connection, records: Iterable[Record]) -> int:
    """Write records as the server holds them; call inside a transaction."""
    rows = [mirror_row(r) for r in records]
    conn.executemany(MIRROR_UPSERT, rows)
    return len(rows)


MIRROR_COLUMNS = "id, dataset_id, created_at, updated_at, deleted_at, source, payload, properties"
MIRROR_UPSERT = f"""
INSERT INTO mirror ({MIRROR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    dataset_id = excluded.dataset_id, created_at = excluded.created_at,
    updated_at = excluded.updated_at, deleted_at = excluded.deleted_at,
    source = excluded.source, payload = excluded.payload, properties = excluded.properties
"""


def mirror_row(record: Record) -> tuple[Any, ...]:
    return (
        record.id,
        record.dataset_id,
        record.created_at,
        record.updated_at,
        record.deleted_at,
        record.source,
        canonical(record.payload),
        canonical(record.properties),
    )
