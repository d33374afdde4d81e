"""What a SQL statement says at first sight: its first word, whether it looks like a
write (for clear messages only: SQLite's read-only connection is what refuses writes)."""

from __future__ import annotations

import re

WRITE_VERBS = {
    "insert", "update", "delete", "replace", "create", "drop", "alter",
    "attach", "detach", "vacuum", "reindex", "analyze", "begin", "commit", "savepoint",
}


def first_word(sql: str) -> str:
    words = [line.split("--")[0] for line in sql.strip().splitlines()]
    tokens = " ".join(words).replace("(", " ").split()
    return tokens[0].lower() if tokens else ""


def looks_like_write(sql: str) -> bool:
    """A first-word check, only to give a clear message: the read-only connection is what
    actually prevents writes (``WITH … DELETE`` and friends still hit it)."""
    words = [line.split("--")[0] for line in sql.strip().splitlines()]
    tokens = " ".join(words).replace("(", " ").split()
    return bool(tokens) and (
        tokens[0].lower() in WRITE_VERBS or (tokens[0].lower() == "pragma" and "=" in sql)
    )


def first_word_after_comments(sql: str) -> str:
    """``first_word``, skipping ``/* … */`` comments too."""
    return first_word(re.sub(r"/\*.*?\*/", " ", sql, flags=re.DOTALL))
