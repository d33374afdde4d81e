"""The store: one SQLite file. Opening, creating (0600), migrating, locking and
transactions live here (the mirror's writes: ``localstore.store.mirror``; the schema's
versions: ``localstore.store.migrations``).

The store uses the standard library's sqlite3 directly: the command line must start
fast, and SQLAlchemy alone costs a third of a second to import. ``localstore.store.models``
offers the same tables as sqlmodel classes for Python callers who want typed rows.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore.errors import StoreError, SyncInProgressError
from localstore.store.migrations import MIGRATIONS, SCHEMA_VERSION
from localstore.store.mirror import upsert_mirror_rows

if TYPE_CHECKING:
    from localstore.core.record import Record

__all__ = ["BUSY_TIMEOUT_MS", "MIGRATIONS", "SCHEMA_VERSION", "Store", "connect_readonly"]

BUSY_TIMEOUT_MS = 10_000

def default_db_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("localstore", appauthor=False)) / "localstore.db"


def schema_sql() -> str:
    """The DDL, from the installed package or, in a source checkout, the repo root."""
    packaged = resources.files("localstore").joinpath("schema.sql")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "schema.sql").read_text(encoding="utf-8")


def _create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class Store:
    """An open store file. Use as a context manager, or call ``close()``."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> Store:
        """Open (creating it if needed) the store at ``path``; migrate an older schema,
        refuse a newer one."""
        db_path = Path(path) if path is not None else default_db_path()
        if db_path.exists() and db_path.is_dir():
            raise StoreError(f"{db_path} is a directory; give --db a file path")
        parent = next((p for p in db_path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise StoreError(f"cannot create the store at {db_path}: {parent} is not a directory")
        try:
            _create_private_file(db_path)
        except OSError as exc:
            raise StoreError(f"cannot create the store at {db_path}: {exc.strerror}") from None
        conn = _connect(db_path)
        store = cls(db_path, conn)
        try:
            store._prepare()
        except BaseException:
            conn.close()
            raise
        return store

    def _prepare(self) -> None:
        # Only read until the file is known to be ours: switching a foreign file to WAL
        # would rewrite its header before refusing it.
        try:
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            tables = self.conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a localstore file ({exc})") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer localstore (schema version {version}; "
                f"this one knows up to {SCHEMA_VERSION}): upgrade localstore"
            )
        if version == 0 and tables:
            raise StoreError(f"{self.path} is an SQLite file but not a localstore store")
        if version < 0 or (0 < version < SCHEMA_VERSION and version not in MIGRATIONS):
            raise StoreError(
                f"{self.path} has an unknown schema version {version}: not a store this "
                "localstore can read"
            )
        try:
            if version == 0:
                # before WAL and the first table: 16 KiB pages hold ~1 KB records with
                # fewer page splits (a first pull writes ~30% faster than with 4 KiB)
                self.conn.execute("PRAGMA page_size = 16384")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            # a large first pull is one transaction: its WAL does not stay that large
            self.conn.execute("PRAGMA journal_size_limit = 67108864")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a localstore file ({exc})") from None
        if version == 0:
            with self.transaction():
                for statement in _split_sql(schema_sql()):
                    if not _is_temp(statement):
                        self.conn.execute(statement)
            return
        while version < SCHEMA_VERSION:
            with self.transaction():
                for statement in _split_sql(MIGRATIONS[version]):
                    self.conn.execute(statement)
                version += 1
                self.conn.execute(f"PRAGMA user_version = {version}")
                # views and triggers are derived: schema.sql's, made anew after each step
                # (the next migration may read them)
                _drop_derived(self.conn)
                _create_derived(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transactions

    def begin(self) -> None:
        """BEGIN IMMEDIATE: the store's write lock, or StoreError when another process holds it."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the store {self.path} is busy ({exc}); try again") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT; rolled back on any exception. Not re-entrant."""
        self.begin()
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    # ------------------------------------------------------------ sync lock

    @contextlib.contextmanager
    def sync_lock(self) -> Iterator[None]:
        """One sync at a time per store file. The OS drops the lock if the process dies."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            if not _try_lock(fd):
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise SyncInProgressError(
                    f"a sync is already running on {self.path} (pid {holder}); "
                    "wait for it to finish and run sync again"
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing releases the lock

    # ------------------------------------------------------------ datasets

    def upsert_dataset(self, dataset: Any, *, tracked: bool | None = None) -> None:
        """Record a dataset's metadata (an api.Dataset or a dict); ``tracked`` None
        keeps the current flag."""
        get = dataset.get if isinstance(dataset, dict) else lambda k: getattr(dataset, k, None)
        self.conn.execute(
            """INSERT INTO datasets (id, name, description, slug, created_at, updated_at, tracked)
               VALUES (:id, :name, :description, :slug, :created_at, :updated_at, COALESCE(:tracked, 0))
               ON CONFLICT (id) DO UPDATE SET
                   name = excluded.name, description = excluded.description,
                   slug = excluded.slug, created_at = excluded.created_at,
                   updated_at = excluded.updated_at,
                   tracked = COALESCE(:tracked, datasets.tracked)""",
            {
                "id": get("id"),
                "name": get("name") or "",
                "description": get("description") or "",
                "slug": get("slug"),
                "created_at": get("created_at"),
                "updated_at": get("updated_at"),
                "tracked": None if tracked is None else int(tracked),
            },
        )

    def ensure_dataset(self, dataset_id: str) -> None:
        """A placeholder row so records of a dataset we never listed can be mirrored."""
        self.conn.execute("INSERT OR IGNORE INTO datasets (id) VALUES (?)", (dataset_id,))

    def tracked_dataset_ids(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT id FROM datasets WHERE tracked = 1 ORDER BY id")]

    # ------------------------------------------------------------ mirror

    def upsert_mirror(self, records: Iterable[Record]) -> int:
        """Write records as the server holds them; call inside a transaction."""
        return upsert_mirror_rows(self.conn, records)


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path}: {exc}") from None
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection SQLite itself refuses to write through (``mode=ro``)."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute("PRAGMA query_only = ON")
    # mode=ro guards the store, not other files: ATTACH creates a missing file, and
    # VACUUM INTO (which attaches its target) writes a copy of the store anywhere
    conn.set_authorizer(_deny_attach)
    return conn


def _deny_attach(action: int, *_: object) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _derived_statements() -> list[str]:
    return [
        s for s in _split_sql(schema_sql())
        if s.upper().startswith(("CREATE VIEW", "CREATE TRIGGER"))
    ]


def _is_temp(statement: str) -> bool:
    return statement.upper().startswith(("CREATE TEMP ", "CREATE TEMPORARY "))


def session_statements() -> list[str]:
    """schema.sql's TEMP objects: what one connection creates for itself when it needs
    them (the SQL write surface of ``sql --write``); never part of the file."""
    return [s for s in _split_sql(schema_sql()) if _is_temp(s)]


def _drop_derived(conn: sqlite3.Connection) -> None:
    for kind, name in conn.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('view', 'trigger')"
    ).fetchall():
        conn.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')


def _create_derived(conn: sqlite3.Connection) -> None:
    for statement in _derived_statements():
        conn.execute(statement)


def _split_sql(script: str) -> list[str]:
    """Split a DDL script into complete statements (sqlite3.complete_statement aware)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - localstore targets POSIX laptops
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True
