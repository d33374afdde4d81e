"""The mirror's writes: records as the server holds them (pull and sync share these)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

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


SET_CONTENTS = """
UPDATE mirror SET updated_at = b.value ->> 1, payload = b.value ->> 2, properties = b.value ->> 3,
                  deleted_at = NULL
FROM json_each(:rows) AS b WHERE mirror.id = b.value ->> 0
"""


def set_mirror_contents(conn: sqlite3.Connection, rows: list[tuple[str, str, Any, Any]]) -> None:
    """:func:`set_mirror_content` for many records — (id, updated_at, payload,
    properties) each — in one statement."""
    if not rows:
        return
    texts = [(rid, at, canonical(payload), canonical(props)) for rid, at, payload, props in rows]
    text = batch_text(texts)
    if text is None:
        for rid, at, payload, props in rows:
            set_mirror_content(conn, rid, at, payload, props)
    else:
        conn.execute(SET_CONTENTS, {"rows": text})


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


# A large first pull, while the id index is dropped (localstore.sync.mirror_writer):
# nothing to conflict with, a record listed twice is written twice (the later row wins
# when the index is built again).
MIRROR_INSERT = MIRROR_UPSERT.split("ON CONFLICT")[0]


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


# ------------------------------------------------------------------ set-based batches
# A listing's batch goes to SQLite as one JSON array text, one statement per step:
# executemany steps once per row and hands the GIL back and forth with the threads still
# fetching pages each time, which made a pull's writes three times slower than the same
# writes alone. A batch row is [id, dataset_id, created_at, updated_at, source, payload,
# properties] (a listed record is never a tombstone), payload and properties as JSON
# values: the batch is dumped once with sorted keys, and SQLite's ``->`` hands back each
# value's text exactly as canonical() writes it (no value is encoded twice, or escaped
# as a string inside the batch; tests/test_mirror_batch.py).

BatchRow = tuple[str, str, str, str, str, Any, Any]

CHANGED_IN_BATCH = """
SELECT json_group_array(json_array(b.key, m.id IS NULL OR m.deleted_at IS NOT NULL
                                          OR m.payload IS NOT b.value -> 5))
FROM json_each(:batch) AS b LEFT JOIN mirror AS m ON m.id = b.value ->> 0
WHERE m.id IS NULL OR m.deleted_at IS NOT NULL OR m.payload IS NOT b.value -> 5
   OR m.updated_at IS NOT b.value ->> 3 OR m.properties IS NOT b.value -> 6
"""

UPSERT_BATCH = f"""
INSERT INTO mirror ({MIRROR_COLUMNS})
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, NULL, value ->> 4, value -> 5, value -> 6
FROM json_each(:batch) WHERE true
ON CONFLICT (id) DO UPDATE SET
    dataset_id = excluded.dataset_id, created_at = excluded.created_at,
    updated_at = excluded.updated_at, deleted_at = excluded.deleted_at,
    source = excluded.source, payload = excluded.payload, properties = excluded.properties
"""


def batch_row_text(row: BatchRow) -> tuple[str, str, str, str, str, str, str]:
    """A batch row with its payload and properties as the text stored (row by row)."""
    return (*row[:5], canonical(row[5]), canonical(row[6]))


def batch_text(rows: Sequence[tuple[Any, ...]]) -> str | None:
    """The rows as one JSON array text, keys sorted, or None when a value would not
    come back from SQLite's JSON functions exactly as it went in (a NUL, a lone
    surrogate, an integer past 64 bits): such a batch is written row by row instead."""
    try:
        text = orjson.dumps(rows, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return None
    return None if "\\u0000" in text else text


def changed_in_batch(conn: sqlite3.Connection, text: str) -> list[tuple[int, bool]]:
    """The rows of a batch that are new or differ from the mirror (a tombstone, another
    payload, properties or ``updated_at``), by index, each with whether its payload text
    may have changed (new, revived or another payload)."""
    (found,) = conn.execute(CHANGED_IN_BATCH, {"batch": text}).fetchone()
    return [(index, bool(text_changed)) for index, text_changed in orjson.loads(found)]


# The same, the rows taken in id order: each of the id index's pages is then visited
# once per batch, in order. That pays once the index is many times SQLite's page cache
# (a pull of 1,000,000 records: 40 s against 44 s) and costs a sort where it is not
# (20,000 records: ~5 % slower). A record listed twice in one batch: the later wins, as unsorted.
UPSERT_BATCH_IN_ID_ORDER = UPSERT_BATCH.replace("WHERE true", "WHERE true ORDER BY value ->> 0, key")


def upsert_batch(conn: sqlite3.Connection, text: str, *, in_id_order: bool = False) -> None:
    """Write a batch's rows as the server holds them; call inside a transaction."""
    conn.execute(UPSERT_BATCH_IN_ID_ORDER if in_id_order else UPSERT_BATCH, {"batch": text})


INSERT_BATCH = UPSERT_BATCH.split("ON CONFLICT")[0]


def insert_batch(conn: sqlite3.Connection, text: str) -> None:
    """A batch's rows appended, each as a new row (:data:`MIRROR_INSERT`)."""
    conn.execute(INSERT_BATCH, {"batch": text})
