"""Full-text search over the records as you see them now (pending edits applied).

The index is SQLite's FTS5 (``search_fts`` in schema.sql): one entry per chat message,
and one per payload that has no messages list. Triggers on the mirror and the working
copies keep it in step with every edit; a pull only lists the records whose text it
changed (``search_dirty``; a dataset's first pull marks the whole dataset, ``search_stale``),
and every reader of the index catches up on those first
(:func:`catch_up`), thousands at a time. Queries use FTS5's syntax:
words (all must match), ``"a phrase"``, ``AND`` / ``OR`` / ``NOT``, ``prefix*``,
``NEAR(a b, 5)`` and parentheses. Results are ranked by bm25, best first.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from localstore.core.ids import parse_uuid
from localstore.core.search_text import message_docs
from localstore.errors import UsageError
from localstore.store.db import Store

CATCH_UP_BATCH = 2000

SYNTAX_HINT = 'FTS5 syntax: words, "a phrase", AND, OR, NOT, prefix*, NEAR(a b); quote text with punctuation'
SNIPPET_TOKENS = 12


@dataclass(frozen=True)
class SearchHit:
    """One matching message (``idx``/``role`` None for a payload with no messages list).
    ``snippet`` is the matching passage with matches between the two highlight marks;
    ``score`` is FTS5's bm25 (lower is better)."""

    record_id: str
    dataset_id: str
    idx: int | None
    role: str | None
    snippet: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search(
    store: Store,
    query: str,
    *,
    dataset_id: str | None = None,
    role: str | None = None,
    limit: int | None = 20,
    highlight: tuple[str, str] = ("[", "]"),
    ellipsis: str = "…",
) -> list[SearchHit]:
    """The best ``limit`` matches of ``query`` (None: all), optionally only in one
    dataset or one message role. A malformed query raises UsageError."""
    if not query.strip():
        raise UsageError("the search query is empty")
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    sql = f"""SELECT record_id, dataset_id, idx, role,
                     snippet(search_fts, 0, ?, ?, ?, {SNIPPET_TOKENS}) AS snippet, rank AS score
              FROM search_fts WHERE search_fts MATCH ?"""
    params: list[Any] = [highlight[0], highlight[1], ellipsis, query]
    if dataset_id is not None:
        sql += " AND dataset_id = ?"
        params.append(parse_uuid(dataset_id, what="dataset id"))
    if role is not None:
        sql += " AND role = ?"
        params.append(role)
    sql += " ORDER BY rank"  # FTS5 sorts by rank itself: only the rows returned get a snippet
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    catch_up(store)
    try:
        rows = store.conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        raise UsageError(f"bad search query {query!r}: {exc} ({SYNTAX_HINT})") from None
    return [SearchHit(*row) for row in rows]


def catch_up(store: Store) -> int:
    """Index the records pulls wrote since the index was last read; returns how many.
    Safe to call any time (a few microseconds when there is nothing to do)."""
    conn = store.conn
    if conn.execute(
        "SELECT EXISTS (SELECT 1 FROM search_dirty) OR EXISTS (SELECT 1 FROM search_stale)"
    ).fetchone()[0] == 0:
        return 0
    return _catch_up_datasets(store) + _catch_up_records(store)


def _catch_up_datasets(store: Store) -> int:
    """Datasets a first pull marked whole: their records in (created_at, id) order (the
    mirror's index by dataset), a batch per transaction, each remembering where it stopped."""
    conn = store.conn
    done = 0
    while True:
        with store.transaction():
            stale = conn.execute(
                "SELECT dataset_id, after_created_at, after_id FROM search_stale LIMIT 1"
            ).fetchone()
            if stale is None:
                return done
            dataset_id, after_created_at, after_id = stale
            batch = conn.execute(
                """SELECT created_at, id FROM mirror
                   WHERE dataset_id = ? AND (created_at, id) > (?, ?)
                   ORDER BY created_at, id LIMIT ?""",
                (dataset_id, after_created_at, after_id, CATCH_UP_BATCH),
            ).fetchall()
            reindex(conn, [rid for _, rid in batch])
            if len(batch) < CATCH_UP_BATCH:
                conn.execute("DELETE FROM search_stale WHERE dataset_id = ?", (dataset_id,))
            else:
                conn.execute(
                    "UPDATE search_stale SET after_created_at = ?, after_id = ? WHERE dataset_id = ?",
                    (*batch[-1], dataset_id),
                )
            done += len(batch)


def _catch_up_records(store: Store) -> int:
    conn = store.conn
    done = 0
    while True:
        with store.transaction():
            ids = [r[0] for r in conn.execute(
                "SELECT record_id FROM search_dirty LIMIT ?", (CATCH_UP_BATCH,)
            )]
            if not ids:
                return done
            reindex(conn, ids)
            conn.executemany("DELETE FROM search_dirty WHERE record_id = ?", [(i,) for i in ids])
            done += len(ids)


def reindex(conn: sqlite3.Connection, ids: list[str]) -> None:
    """Recompute the index rows of these records from what `records` shows of them, as
    the triggers do one by one: rows computed in Python (search_text) where it can, from
    the search_source view otherwise."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS reindex_ids (id TEXT PRIMARY KEY)")
    conn.execute("DELETE FROM temp.reindex_ids")
    conn.executemany("INSERT OR IGNORE INTO temp.reindex_ids (id) VALUES (?)", [(i,) for i in ids])
    conn.execute(
        """INSERT INTO search_fts (search_fts, rowid, content, record_id, dataset_id, idx, role)
           SELECT 'delete', d.id, d.content, d.record_id, d.dataset_id, d.idx, d.role
           FROM search_docs AS d WHERE d.record_id IN (SELECT id FROM temp.reindex_ids)"""
    )
    conn.execute("DELETE FROM search_docs WHERE record_id IN (SELECT id FROM temp.reindex_ids)")
    first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM search_docs").fetchone()[0]
    rows: list[tuple[Any, ...]] = []
    by_view: list[str] = []
    for rid, dataset_id, payload in conn.execute(
        "SELECT id, dataset_id, payload FROM records WHERE id IN (SELECT id FROM temp.reindex_ids)"
    ):
        docs = message_docs(json.loads(payload))
        if docs is None:
            by_view.append(rid)
        else:
            rows.extend((rid, dataset_id, idx, role, text) for idx, role, text in docs)
    conn.executemany(
        "INSERT INTO search_docs (record_id, dataset_id, idx, role, content) VALUES (?, ?, ?, ?, ?)", rows
    )
    for rid in by_view:  # one at a time: the view filters by record id only then
        conn.execute(
            """INSERT INTO search_docs (record_id, dataset_id, idx, role, content)
               SELECT record_id, dataset_id, idx, role, content FROM search_source
               WHERE record_id = ? AND content != ''""",
            (rid,),
        )
    conn.execute(
        """INSERT INTO search_fts (rowid, content, record_id, dataset_id, idx, role)
           SELECT id, content, record_id, dataset_id, idx, role FROM search_docs WHERE id >= ?""",
        (first,),
    )
