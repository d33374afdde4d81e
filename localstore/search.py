"""Full-text search over the records as you see them now (pending edits applied).

The index is SQLite's FTS5 (``search_fts`` in schema.sql): one entry per chat message,
and one per payload that has no messages list. Triggers on the mirror and the working
copies keep it in step, so there is nothing to refresh. Queries use FTS5's syntax:
words (all must match), ``"a phrase"``, ``AND`` / ``OR`` / ``NOT``, ``prefix*``,
``NEAR(a b, 5)`` and parentheses. Results are ranked by bm25, best first.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from .errors import UsageError
from .ids import parse_uuid
from .store import Store

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
    try:
        rows = store.conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        raise UsageError(f"bad search query {query!r}: {exc} ({SYNTAX_HINT})") from None
    return [SearchHit(*row) for row in rows]
