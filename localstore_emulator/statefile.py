"""The emulator's SQLite file (``EmulatorState(db_path=...)``): every write goes
through, and the next state on the file starts where the last one stopped."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from typing import Any

from localstore_emulator.clock import canonical_us
from localstore_emulator.model import Record, dumps

_DDL = """
CREATE TABLE IF NOT EXISTS datasets (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, deleted_at TEXT, source TEXT NOT NULL,
    payload TEXT NOT NULL, properties TEXT NOT NULL
);
"""
_STAMPS = ("created_at", "updated_at", "deleted_at")


def _body(text: str) -> dict[str, Any]:
    body = json.loads(text)
    for key in _STAMPS:
        if body.get(key) is not None:
            body[key] = canonical_us(body[key])
    return body


def _record(row: tuple[Any, ...]) -> Record:
    values = list(row)
    for at in (2, 3, 4):  # created_at, updated_at, deleted_at
        if values[at] is not None:
            values[at] = canonical_us(values[at])
    return Record(*values)


class StateFile:
    """Not thread-safe by itself: the state calls it under its lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.db = sqlite3.connect(os.fspath(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_DDL)

    def load(self) -> tuple[list[dict[str, Any]], list[Record], list[dict[str, Any]]]:
        """(datasets, records, tasks), each by (created_at, id), stamps in the canonical
        µs form whatever ISO 8601 form the file holds them in."""
        datasets = [_body(text) for (text,) in self.db.execute("SELECT body FROM datasets")]
        records = [_record(row) for row in self.db.execute("SELECT * FROM records")]
        tasks = [_body(text) for (text,) in self.db.execute("SELECT body FROM tasks")]
        datasets.sort(key=lambda d: (d["created_at"], d["id"]))
        records.sort(key=lambda r: (r.created_at, r.id))
        tasks.sort(key=lambda t: (t["created_at"], t["id"]))
        return datasets, records, tasks

    def save_records(self, records: Iterable[Record]) -> None:
        self.db.execute("BEGIN")
        try:
            self.db.executemany(
                "INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?)", (r.row() for r in records)
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def save_body(self, table: str, body: dict[str, Any]) -> None:
        self.db.execute(f"INSERT OR REPLACE INTO {table} (id, body) VALUES (?, ?)", (body["id"], dumps(body)))

    def close(self) -> None:
        self.db.close()
