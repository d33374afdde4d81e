"""``localstore sql --write``: SQL writes through the ``records`` view become queued changes.

How a statement runs, in one transaction:

1. schema.sql's TEMP objects (``sql_writes`` and three ``INSTEAD OF`` triggers on
   ``records``) exist on the store's connection only: an ``INSERT``/``UPDATE``/``DELETE``
   on ``records`` records the intended rows in ``temp.sql_writes`` and changes nothing
   else. They are TEMP on purpose: in the file they would be seen by every other
   SQLite client, whose writes would then fill a scratch table that nothing applies.
2. While the user's statement runs, SQLite's authorizer refuses everything but reads,
   writes to ``records`` and — from inside those triggers only — inserts into
   ``temp.sql_writes``: the mirror, the change log, other tables, DDL, ``ATTACH``,
   transactions and ``PRAGMA``s that change anything are refused with one message.
3. The change log's owner (:mod:`localstore.store.ledger.bulk`) applies the rows with its own
   rules — the transitions ``add``/``edit``/``set``/``rm`` use — validating each; an
   invalid row raises a UsageError naming it, and the whole statement rolls back.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from localstore.errors import UsageError
from localstore.ops.edits import parse_json_object_text, validate_object
from localstore.ops.sqltext import first_word_after_comments
from localstore.store.db import Store, session_statements
from localstore.store.jsontext import loads
from localstore.store.ledger import bulk as ledger_bulk
from localstore.store.ledger.bulk import Queued

WRITABLE = (
    "with --write, SQL changes records only through the `records` view: INSERT (dataset_id, "
    "payload, properties), UPDATE of payload and properties, DELETE; the mirror, the change "
    "log and localstore's other tables change only through its commands"
)
_TRIGGERS = frozenset({"records_sql_insert", "records_sql_update", "records_sql_delete"})
_SCRATCH = "sql_writes"
_FETCH = 1000

_READS = frozenset({
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE,
})
_WRITES = {
    sqlite3.SQLITE_INSERT: "INSERT INTO", sqlite3.SQLITE_UPDATE: "UPDATE", sqlite3.SQLITE_DELETE: "DELETE FROM",
}
# PRAGMAs that only read, whatever their argument (they also exist as pragma_… functions)
_READ_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check", "function_list",
    "pragma_list", "collation_list", "database_list", "compile_options", "module_list",
})
# PRAGMAs that change something even without an argument
_ACTING_PRAGMAS = frozenset({"optimize", "wal_checkpoint", "incremental_vacuum", "shrink_memory"})
_ACTIONS = {
    value: name.removeprefix("SQLITE_").replace("_", " ")
    for name, value in vars(sqlite3).items()
    if name.startswith("SQLITE_") and isinstance(value, int) and name not in {
        "SQLITE_OK", "SQLITE_DENY", "SQLITE_IGNORE",
    } and not name.startswith(("SQLITE_LIMIT", "SQLITE_ERROR", "SQLITE_CONSTRAINT", "SQLITE_IOERR"))
}


class _Guard:
    """The authorizer while the user's statement is prepared: see the module docstring."""

    def __init__(self) -> None:
        self.refused: str | None = None
        self.wrote_records = False

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
        if action in _READS:
            return sqlite3.SQLITE_OK
        if action in _WRITES:
            if source is None and db == "main" and arg1 == "records":
                self.wrote_records = True
                return sqlite3.SQLITE_OK
            if source in _TRIGGERS and db == "temp" and arg1 == _SCRATCH and action == sqlite3.SQLITE_INSERT:
                return sqlite3.SQLITE_OK
            schema = arg1 in ("sqlite_master", "sqlite_temp_master", "sqlite_schema", "sqlite_temp_schema")
            if schema and action == sqlite3.SQLITE_UPDATE:
                # a table-valued function (pragma_table_info…) declares itself this way;
                # SQLite itself refuses a statement that updates the schema table
                # (without PRAGMA writable_schema, refused here), and ALTER is asked as such
                return sqlite3.SQLITE_OK
            # CREATE and DROP are first authorised as writes to the schema table
            what = "changing the schema" if schema else f"{_WRITES[action]} {arg1}"
        elif action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _READ_PRAGMAS or (arg2 is None and name not in _ACTING_PRAGMAS):
                return sqlite3.SQLITE_OK
            what = f"PRAGMA {arg1}" + (f" = {arg2}" if arg2 is not None else "")
        else:
            what = " ".join(x for x in (_ACTIONS.get(action, "this statement"), arg1) if x)
        if self.refused is None:
            self.refused = what
        return sqlite3.SQLITE_DENY


@dataclass
class WriteResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    queued: Queued | None  # None: the statement did not write to `records`


def run_write(store: Store, sql: str, params: tuple[Any, ...] = ()) -> WriteResult:
    """Run one statement with writes allowed through ``records`` only; what it wrote is
    queued by the change log's owner before the transaction commits."""
    if first_word_after_comments(sql) == "reindex":  # rebuilds indexes without asking the authorizer
        raise UsageError(f"REINDEX is refused: {WRITABLE}; nothing was changed")
    conn = store.conn
    for statement in session_statements():
        conn.execute(statement)
    guard = _Guard()
    with store.transaction():
        conn.execute(f"DELETE FROM temp.{_SCRATCH}")
        conn.set_authorizer(guard)
        try:
            cursor = conn.execute(sql, params)
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            if guard.refused is not None:
                raise UsageError(f"{guard.refused} is refused: {WRITABLE}; nothing was changed") from None
            view = re.fullmatch(r"cannot modify (\S+) because it is a view", str(exc))
            if view:  # a view without INSTEAD OF triggers: SQLite refuses before asking
                raise UsageError(
                    f"the view {view.group(1)} is not writable: {WRITABLE}; nothing was changed"
                ) from None
            if "may not be modified" in str(exc):
                raise UsageError(f"SQL error: {exc}: {WRITABLE}; nothing was changed") from None
            raise UsageError(f"SQL error: {exc}; nothing was changed") from None
        finally:
            conn.set_authorizer(None)
        columns = [d[0] for d in cursor.description or ()]
        queued = apply(conn) if guard.wrote_records else None
    return WriteResult(columns, rows, queued)


# ------------------------------------------------------------------ the owner applies


def apply(conn: sqlite3.Connection) -> Queued:
    """Queue the rows a statement wrote to ``records`` (inside its transaction)."""
    ops = [r[0] for r in conn.execute(f"SELECT DISTINCT op FROM temp.{_SCRATCH}")]
    queued = Queued()
    try:
        for op in ops:
            if op == "update":
                queued.add(ledger_bulk.edit_many(conn, _updates(conn)))
            elif op == "delete":
                queued.add(ledger_bulk.delete_many(conn, _deletes(conn)))
            else:
                queued.add(ledger_bulk.create_many(conn, _inserts(conn)))
    except UsageError as exc:
        raise type(exc)(f"{exc}; nothing was queued") from None
    conn.execute(f"DELETE FROM temp.{_SCRATCH}")
    return queued


def _rows(conn: sqlite3.Connection, op: str, columns: str) -> Iterator[tuple[Any, ...]]:
    cursor = conn.execute(f"SELECT {columns} FROM temp.{_SCRATCH} WHERE op = ? ORDER BY seq", (op,))
    while batch := cursor.fetchmany(_FETCH):
        yield from batch


def _updates(conn: sqlite3.Connection) -> Iterator[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]:
    for rid, payload_set, payload, properties_set, properties, fixed in _rows(
        conn, "update", "record_id, payload_set, payload, properties_set, properties, fixed"
    ):
        if fixed:
            raise UsageError(
                f"record {rid}: the statement changes {fixed}, which localstore or the server "
                "sets (only payload and properties can be changed)"
            )
        yield (
            rid,
            json_object(payload, f"record {rid}: payload") if payload_set else None,
            json_object(properties, f"record {rid}: properties") if properties_set else None,
        )


def _deletes(conn: sqlite3.Connection) -> Iterator[str]:
    for (rid,) in _rows(conn, "delete", "record_id"):
        yield rid


def _inserts(conn: sqlite3.Connection) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for n, (dataset_id, payload, properties_set, properties, fixed) in enumerate(
        _rows(conn, "insert", "dataset_id, payload, properties_set, properties, fixed"), start=1
    ):
        where = f"inserted row {n}"
        if fixed:
            raise UsageError(
                f"{where} gives {fixed}, which localstore or the server sets: insert "
                "dataset_id, payload and properties only (a new record gets a provisional id)"
            )
        if not isinstance(dataset_id, str) or not dataset_id:
            raise UsageError(f"{where} has no dataset_id: every new record belongs to a dataset")
        yield (
            dataset_id,
            json_object(payload, f"{where}: payload"),
            json_object(properties, f"{where}: properties") if properties_set else {},
        )


def json_object(value: Any, what: str) -> dict[str, Any]:
    """A JSON object from SQL text (as ``json_set`` & co. give it), or UsageError."""
    if not isinstance(value, str):
        kind = "null" if value is None else "a BLOB" if isinstance(value, bytes) else f"the number {value!r}"
        raise UsageError(f"{what} must be a JSON object, got {kind}")
    try:
        parsed = loads(value)
    except ValueError:  # orjson's message is not for people; the standard library's is
        return parse_json_object_text(value, what)
    return validate_object(parsed, what) if not isinstance(parsed, dict) else parsed
