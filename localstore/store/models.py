"""Typed rows for Python callers: sqlmodel classes mapping every table of ``schema.sql``
(``localstore.models`` is this module). Query them with ``select()`` in a read-only
session (``store.session()`` on a store from ``localstore.open``, or ``session(path)``):

    >>> import os, tempfile
    >>> import localstore
    >>> from sqlmodel import select
    >>> from localstore.models import ChangeRow, WorkingRow
    >>> path = os.path.join(tempfile.mkdtemp(), "store.db")
    >>> ds = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    >>> with localstore.open(path) as store:
    ...     store.store.ensure_dataset(ds)  # `store.pull(ds)` would mirror a real one
    ...     rid = store.add(ds, {"messages": []}, {"label": "new"})
    ...     with store.session() as s:
    ...         change = s.exec(select(ChangeRow).where(ChangeRow.record_id == rid)).one()
    ...         work = s.get(WorkingRow, rid)
    >>> change.kind, change.state, work.properties, work.is_create
    ('create', 'pending', {'label': 'new'}, True)

(``MirrorRow`` holds the records as last pulled, ``WorkingRow`` the local edits and
``ChangeRow`` the change log; ``RecordRow`` and ``ConflictRow`` read the ``records`` and
``conflicts`` views; tests/test_facade.py runs this example.)

``schema.sql`` stays the one DDL: nothing here creates or alters tables, and
``tests/test_schema.py`` proves the two agree column by column. The sessions this
module hands out are read-only (SQLite's ``mode=ro``): every local mutation goes
through ``localstore.ops.edits`` / ``localstore.sync.pull`` so the change log stays true.

Importing this module costs a third of a second (SQLAlchemy), so nothing in the
command line imports it; import it yourself when you want typed rows.
"""

from __future__ import annotations

import json
import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator, UserDefinedType
from sqlmodel import Field, Session, SQLModel

from localstore.store.db import Store, connect_readonly
from localstore.store.jsontext import canonical

__all__ = [
    "ChangeRow",
    "ConflictRow",
    "DatasetRow",
    "IdMapRow",
    "JudgementRunRow",
    "MirrorRow",
    "RecordRow",
    "SearchDirtyRow",
    "SearchDocRow",
    "SearchStaleRow",
    "SearchStateRow",
    "SyncRunRow",
    "WorkingRow",
    "engine",
    "session",
]

# ------------------------------------------------------------------ column types


class JSONText(TypeDecorator[Any]):
    """A JSON object kept as TEXT (``json_extract`` works on it); a dict in Python."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else canonical(value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else json.loads(value)


class Flag(TypeDecorator[bool]):
    """An INTEGER 0/1 column read as a bool."""

    impl = sa.Integer
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> int | None:
        return None if value is None else int(bool(value))

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> bool | None:
        return None if value is None else bool(value)


class AnyValue(UserDefinedType[Any]):
    """An untyped SQLite column: the value keeps whatever type it was stored with (a
    declared type such as ANY would give numeric affinity and turn '01' into 1)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return ""


_REQUIRED: Any = ...


def _column(
    sa_type: Any,
    *,
    nullable: bool = False,
    default: Any = _REQUIRED,
    server_default: str | None = None,
    primary_key: bool = False,
    foreign_key: str | None = None,
    unique: bool = False,
) -> Any:
    """A Field whose SQL side (type, NOT NULL, DEFAULT, key) spells out schema.sql's."""
    kwargs: dict[str, Any] = {}
    if server_default is not None:
        kwargs["server_default"] = sa.text(server_default)
    if unique:
        kwargs["unique"] = True
    extra: dict[str, Any] = {"foreign_key": foreign_key} if foreign_key else {}
    return Field(
        default=None if default is _REQUIRED and nullable else default,
        sa_type=sa_type,
        nullable=nullable,
        primary_key=primary_key,
        sa_column_kwargs=kwargs,
        **extra,
    )


TEXT = sa.Text
INTEGER = sa.Integer

# ------------------------------------------------------------------ tables


class DatasetRow(SQLModel, table=True):
    """A dataset the store knows; ``tracked`` ones are pulled by ``pull`` and ``sync``."""

    __tablename__ = "datasets"

    id: str = _column(TEXT, primary_key=True)
    name: str = _column(TEXT, default="", server_default="''")
    description: str = _column(TEXT, default="", server_default="''")
    slug: str | None = _column(TEXT, nullable=True)
    created_at: str | None = _column(TEXT, nullable=True)
    updated_at: str | None = _column(TEXT, nullable=True)
    tracked: bool = _column(Flag, default=False, server_default="0")
    last_pulled_at: str | None = _column(TEXT, nullable=True)


class MirrorRow(SQLModel, table=True):
    """A record as last seen on the server (a tombstone when ``deleted_at`` is set)."""

    __tablename__ = "mirror"
    # unique by an index, not a PRIMARY KEY (schema.sql says why); the ORM's key still
    __table_args__ = (sa.Index("mirror_id", "id", unique=True),)
    __mapper_args__ = {"primary_key": ["id"]}

    id: str = _column(TEXT)
    dataset_id: str = _column(TEXT, foreign_key="datasets.id")
    created_at: str = _column(TEXT)
    updated_at: str = _column(TEXT)
    deleted_at: str | None = _column(TEXT, nullable=True)
    source: str = _column(TEXT)
    payload: dict[str, Any] = _column(JSONText)
    properties: dict[str, Any] = _column(JSONText)


class WorkingRow(SQLModel, table=True):
    """A record's local working copy; ``payload``/``properties`` are None when that
    part is not edited locally. Each part has its base: the remote value the user saw
    when they edited it, and that value's ``updated_at`` (None when unknown)."""

    __tablename__ = "working"

    record_id: str = _column(TEXT, primary_key=True)
    dataset_id: str = _column(TEXT, foreign_key="datasets.id")
    payload: dict[str, Any] | None = _column(JSONText, nullable=True)
    properties: dict[str, Any] | None = _column(JSONText, nullable=True)
    deleted: bool = _column(Flag, default=False, server_default="0")
    is_create: bool = _column(Flag, default=False, server_default="0")
    base_payload: dict[str, Any] | None = _column(JSONText, nullable=True)
    base_payload_at: str | None = _column(TEXT, nullable=True)
    base_properties: dict[str, Any] | None = _column(JSONText, nullable=True)
    base_properties_at: str | None = _column(TEXT, nullable=True)
    state: str = _column(TEXT, default="pending", server_default="'pending'")
    conflict_parts: list[str] | None = _column(JSONText, nullable=True)
    detected_at: str | None = _column(TEXT, nullable=True)
    created_at: str = _column(TEXT)


class ChangeRow(SQLModel, table=True):
    """An entry of the outbound change log."""

    __tablename__ = "changes"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True, sa_type=INTEGER)
    record_id: str = _column(TEXT)
    dataset_id: str = _column(TEXT)
    kind: str = _column(TEXT)
    body: Any = _column(JSONText, nullable=True)
    base_updated_at: str | None = _column(TEXT, nullable=True)
    state: str = _column(TEXT, default="pending", server_default="'pending'")
    error: str | None = _column(TEXT, nullable=True)
    created_at: str = _column(TEXT)
    pushed_at: str | None = _column(TEXT, nullable=True)
    sent: Any = _column(JSONText, nullable=True)


class IdMapRow(SQLModel, table=True):
    """An offline create's provisional id and the id the server gave it."""

    __tablename__ = "id_map"

    provisional_id: str = _column(TEXT, primary_key=True)
    server_id: str = _column(TEXT, unique=True)
    mapped_at: str = _column(TEXT)


class SyncRunRow(SQLModel, table=True):
    """One ``sync``."""

    __tablename__ = "sync_runs"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True, sa_type=INTEGER)
    started_at: str = _column(TEXT)
    finished_at: str | None = _column(TEXT, nullable=True)
    pushed: int = _column(INTEGER, default=0, server_default="0")
    pulled: int = _column(INTEGER, default=0, server_default="0")
    conflicts: int = _column(INTEGER, default=0, server_default="0")
    errors: int = _column(INTEGER, default=0, server_default="0")
    status: str = _column(TEXT, default="running", server_default="'running'")
    message: str | None = _column(TEXT, nullable=True)


class JudgementRunRow(SQLModel, table=True):
    """One live-judging run (the ``judgements`` view shows the latest per judge)."""

    __tablename__ = "judgement_runs"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True, sa_type=INTEGER)
    record_id: str = _column(TEXT)
    judge_name: str = _column(TEXT)
    model_name: str = _column(TEXT)
    answer: str | float | None = _column(AnyValue, nullable=True)
    analysis: str = _column(TEXT)
    judged_at: str = _column(TEXT)
    record_updated_at: str | None = _column(TEXT, nullable=True)


class SearchStateRow(SQLModel, table=True):
    """One row: ``deferred`` is 1 only inside a pull's write of a batch of records."""

    __tablename__ = "search_state"

    id: int | None = Field(default=None, primary_key=True, sa_type=INTEGER)
    deferred: int = _column(INTEGER, default=0, server_default="0")


class SearchDirtyRow(SQLModel, table=True):
    """A record a pull wrote whose full-text rows the next reader of the index recomputes."""

    __tablename__ = "search_dirty"

    record_id: str = _column(TEXT, primary_key=True)


class SearchStaleRow(SQLModel, table=True):
    """A dataset whose first pull wrote its records unindexed: the next reader of the index
    indexes them all, in (created_at, id) order from the last one indexed."""

    __tablename__ = "search_stale"

    dataset_id: str = _column(TEXT, primary_key=True)
    after_created_at: str = _column(TEXT, default="", server_default="''")
    after_id: str = _column(TEXT, default="", server_default="''")


class SearchDocRow(SQLModel, table=True):
    """A text the full-text index holds: a message of a record, or the strings of a
    payload that has no messages list (``idx`` and ``role`` None). Query the index
    itself, ``search_fts``, with SQL: it has no model."""

    __tablename__ = "search_docs"

    id: int | None = Field(default=None, primary_key=True, sa_type=INTEGER)
    record_id: str = _column(TEXT)
    dataset_id: str = _column(TEXT)
    idx: int | None = _column(INTEGER, nullable=True)
    role: str | None = _column(TEXT, nullable=True)
    content: str = _column(TEXT)


# ------------------------------------------------------------------ views (read-only)


class RecordRow(SQLModel, table=True):
    """A record as you see it: the ``records`` view (the server's copy with your edits on
    top, and your offline creates). ``sync_state`` is ``synced``, ``pending``,
    ``in_flight`` or ``conflict``; ``updated_at`` is None for a create not yet pushed."""

    __tablename__ = "records"

    id: str = _column(TEXT, primary_key=True)
    dataset_id: str = _column(TEXT)
    created_at: str = _column(TEXT)
    updated_at: str | None = _column(TEXT, nullable=True)
    deleted_at: str | None = _column(TEXT, nullable=True)
    source: str = _column(TEXT)
    payload: dict[str, Any] | None = _column(JSONText, nullable=True)
    properties: dict[str, Any] | None = _column(JSONText, nullable=True)
    sync_state: str = _column(TEXT)


class ConflictRow(SQLModel, table=True):
    """An open conflict: the ``conflicts`` view. ``parts`` lists what conflicts (``payload``,
    JSON Pointers such as ``/properties/label``, ``deleted`` …); ``base``, ``local`` and
    ``remote`` are each ``{"payload": …, "properties": …}`` (None for a side that deleted)."""

    __tablename__ = "conflicts"

    record_id: str = _column(TEXT, primary_key=True)
    dataset_id: str = _column(TEXT)
    parts: list[str] | None = _column(JSONText, nullable=True)
    base: dict[str, Any] | None = _column(JSONText, nullable=True)
    local: dict[str, Any] | None = _column(JSONText, nullable=True)
    remote: dict[str, Any] | None = _column(JSONText, nullable=True)
    detected_at: str | None = _column(TEXT, nullable=True)


# views of schema.sql mapped for select(); nothing writes through them
VIEWS: tuple[type[SQLModel], ...] = (RecordRow, ConflictRow)

TABLES: tuple[type[SQLModel], ...] = (
    DatasetRow,
    MirrorRow,
    WorkingRow,
    ChangeRow,
    IdMapRow,
    SyncRunRow,
    JudgementRunRow,
    SearchDocRow,
    SearchStateRow,
    SearchDirtyRow,
    SearchStaleRow,
)

# ------------------------------------------------------------------ sessions


def engine(store: Store | str | os.PathLike[str]) -> Engine:
    """A read-only SQLAlchemy engine on the store file (``sqlite:///path``, opened
    ``mode=ro``). A path is opened with ``Store.open`` first, so a file that is not a
    store (or is too new) is refused and an older one is migrated."""
    if isinstance(store, Store):
        path = store.path
    else:
        with Store.open(store) as opened:
            path = opened.path
    path = path.resolve()
    return sa.create_engine(
        f"sqlite:///{path}", creator=lambda: connect_readonly(path), poolclass=NullPool
    )


def session(store: Store | str | os.PathLike[str]) -> Session:
    """A read-only sqlmodel Session on the store file; use it as a context manager."""
    return Session(engine(store))
