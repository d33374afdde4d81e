"""Click parameter types for record and dataset ids: a unique prefix stands for the whole
id (localstore.ops.idprefix), and the shell completes ids from the store.

Completion opens the store read-only and never creates it: ``localstore show 1d5<TAB>``
on a machine without a store completes nothing.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from localstore.core.ids import is_uuid
from localstore.ops.idprefix import Kind, candidates, canonical_prefix, resolve_id

COMPLETIONS = 100  # ids offered at most for one <TAB>


class IdType(click.ParamType):
    """A record or dataset id, or a unique prefix of one (at least 4 hex digits)."""

    def __init__(self, kind: Kind) -> None:
        self.kind: Kind = kind
        self.name = f"{kind}_id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str) or is_uuid(value) or ctx is None or ctx.resilient_parsing:
            return value  # a whole id: the command's own checks and messages apply
        obj = ctx.find_root().obj
        if obj is None:
            return value
        return resolve_id(obj.store.conn, value, self.kind)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        return complete_ids(store_path_for_completion(ctx), self.kind, incomplete)


RECORD_ID = IdType("record")
DATASET_ID = IdType("dataset")


def store_path_for_completion(ctx: click.Context) -> Path:
    """The store the command line being completed would open: --db, LOCALSTORE_DB or
    the default (the group's callback does not run while completing)."""
    db = ctx.find_root().params.get("db") or os.environ.get("LOCALSTORE_DB")
    if db:
        return Path(db)
    from localstore.store.db import default_db_path

    return default_db_path()


def complete_ids(path: Path, kind: Kind, incomplete: str) -> list[CompletionItem]:
    """Ids of ``kind`` in the store at ``path`` starting with ``incomplete`` (datasets
    carry their name as help). Nothing when there is no store or it cannot be read."""
    prefix = canonical_prefix(incomplete) if incomplete else ""
    if prefix is None or not path.is_file():
        return []
    from localstore.store.db import connect_readonly

    try:
        conn = connect_readonly(path)
    except sqlite3.Error:
        return []
    try:
        conn.execute("PRAGMA busy_timeout = 200")
        ids = candidates(conn, prefix, kind, limit=COMPLETIONS)
        names: dict[str, str] = {}
        if kind == "dataset" and ids:
            marks = ",".join("?" * len(ids))
            names = dict(conn.execute(f"SELECT id, name FROM datasets WHERE id IN ({marks})", ids).fetchall())
        return [CompletionItem(i, help=names.get(i) or None) for i in ids]
    except sqlite3.Error:
        return []
    finally:
        conn.close()
