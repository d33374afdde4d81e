"""Unique id prefixes, as git accepts for hashes: ``1d5e0683`` stands for the one record
(or dataset) id of the store that starts with it.

A whole UUID passes through untouched, known or not, so the messages about ids the store
does not hold stay those of the command. Lookups are range scans on primary keys
(``id >= '1d5e' AND id < '1d5f'``), never ``LIKE`` over the whole table.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Literal

from localstore.core.ids import is_uuid, parse_uuid
from localstore.errors import UsageError

Kind = Literal["record", "dataset"]

MIN_PREFIX = 4
LISTED = 10  # candidates named in the "ambiguous" message

# where each kind of id lives: (table or view, column); the SQL surface of DESIGN.md
# plus id_map, so that a provisional id of a pushed create still answers to its prefix
_SOURCES: dict[Kind, tuple[tuple[str, str], ...]] = {
    "record": (("mirror", "id"), ("records", "id"), ("changes", "record_id"), ("id_map", "provisional_id")),
    "dataset": (("datasets", "id"),),
}

_HEX_AND_HYPHENS = re.compile(r"[0-9a-fA-F-]+")
_GROUPS = (8, 4, 4, 4, 12)


def canonical_prefix(text: str) -> str | None:
    """The prefix in the canonical lowercase form of a UUID (hyphens where a UUID has
    them, so ``1d5e0683f4`` and ``1d5e0683-f4`` are the same); None if ``text`` cannot
    start a UUID."""
    text = text.strip()
    if not _HEX_AND_HYPHENS.fullmatch(text):
        return None
    digits = text.replace("-", "").lower()
    if not digits or len(digits) > 32:
        return None
    out: list[str] = []
    start = 0
    for size in _GROUPS:
        part = digits[start:start + size]
        if not part:
            break
        out.append(part)
        start += size
    prefix = "-".join(out)
    # keep a trailing hyphen the user typed at a group boundary ("1d5e0683-")
    if text.endswith("-") and len(digits) in (8, 12, 16, 20):
        prefix += "-"
    return prefix


def _upper_bound(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def candidates(conn: sqlite3.Connection, prefix: str, kind: Kind, *, limit: int = 100) -> list[str]:
    """Distinct ids of ``kind`` in the store that start with ``prefix`` (already in the
    canonical form; an empty prefix lists the first ids, offline creates aside), sorted,
    at most ``limit``."""
    found: set[str] = set()
    for table, column in _SOURCES[kind]:
        if prefix:
            sql = f"SELECT {column} FROM {table} WHERE {column} >= ? AND {column} < ? ORDER BY {column} LIMIT ?"
            params: tuple[object, ...] = (prefix, _upper_bound(prefix), limit)
        elif table == "records":
            continue  # the view has no index to walk: the tables list the first ids cheaply
        else:
            sql = f"SELECT {column} FROM {table} ORDER BY {column} LIMIT ?"
            params = (limit,)
        found.update(row[0] for row in conn.execute(sql, params))
    return sorted(found)[:limit]


def resolve_id(conn: sqlite3.Connection, text: str, kind: Kind = "record") -> str:
    """The whole id that ``text`` stands for: a whole UUID as it is, or the one id of the
    store that starts with the prefix ``text`` (at least 4 hex digits). Raises UsageError
    when the prefix is too short, matches nothing or matches several ids (naming them)."""
    if is_uuid(text):
        return parse_uuid(text, what=f"{kind} id")
    prefix = canonical_prefix(text)
    if prefix is None or len(prefix.replace("-", "")) < MIN_PREFIX:
        raise UsageError(
            f"{text!r} is not a valid {kind} id: expected a UUID such as "
            f"3fa85f64-5717-4562-b3fc-2c963f66afa6 or a unique prefix of at least "
            f"{MIN_PREFIX} hex digits"
        )
    found = candidates(conn, prefix, kind, limit=LISTED + 1)
    if not found:
        raise UsageError(f"no {kind} id in the store starts with {text!r}")
    if len(found) > 1:
        listed = ", ".join(found[:LISTED]) + (", …" if len(found) > LISTED else "")
        raise UsageError(f"{text!r} is an ambiguous {kind} id prefix: it starts {listed}")
    return found[0]
