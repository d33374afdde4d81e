"""``localstore.open(path)``: a store file with its operations as methods.

Every method is a thin call into the layer that does the work (``localstore.ops``,
``localstore.sync``, ``localstore.store``); those modules are imported when a method
first needs them, so opening a store and editing offline never imports the network
stack (httpx) or SQLAlchemy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from localstore.store.db import Store

if TYPE_CHECKING:
    from sqlmodel import Session

    from localstore.api import Client
    from localstore.ops.edits import EditResult
    from localstore.ops.queries import QueryResult, Status
    from localstore.ops.resolve import Choice
    from localstore.ops.search import SearchHit
    from localstore.store.ledger import DeleteResult
    from localstore.sync.pull import PullResult
    from localstore.sync.run import SyncReport


class LocalStore:
    """An open store: read, query and edit offline; ``pull`` and ``sync`` talk to the
    API (key from ``MISTRAL_API_KEY`` unless a client or key is given). Close it, or use
    it as a context manager. ``store`` is the low-level :class:`~localstore.store.Store`
    (its ``conn`` is the sqlite3 connection) for what has no method here."""

    def __init__(
        self,
        store: Store,
        *,
        server_url: str | None = None,
        api_key: str | None = None,
        client: Client | None = None,
    ) -> None:
        self.store = store
        self._server_url = server_url
        self._api_key = api_key
        self._client = client
        self._owns_client = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        server_url: str | None = None,
        api_key: str | None = None,
        client: Client | None = None,
    ) -> LocalStore:
        return cls(Store.open(path), server_url=server_url, api_key=api_key, client=client)

    @property
    def path(self) -> str:
        return str(self.store.path)

    def __repr__(self) -> str:
        return f"<localstore {self.path}>"

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None
        self.store.close()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API -----------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The API client, made on first use (``MISTRAL_API_KEY``, ``LOCALSTORE_SERVER_URL``
        or the arguments given to ``open``)."""
        if self._client is None:
            from localstore.api import SERVER_URL_ENV, Client

            if self._api_key is None:
                self._client = Client.from_env(self._server_url)
            else:
                url = self._server_url or os.environ.get(SERVER_URL_ENV)
                self._client = Client(url, self._api_key) if url else Client(api_key=self._api_key)
            self._owns_client = True
        return self._client

    def pull(self, *dataset_ids: str, concurrency: int = 16) -> list[PullResult]:
        """Mirror datasets (and track them); none given: every tracked dataset."""
        from localstore.sync.pull import pull

        return pull(self.store, self.client, dataset_ids, concurrency=concurrency)

    def sync(self, *, dry_run: bool = False, concurrency: int = 16) -> SyncReport:
        """Push queued edits, then pull (``dry_run``: send and change nothing)."""
        from localstore.sync.run import sync

        return sync(self.store, self.client, dry_run=dry_run, concurrency=concurrency)

    # -- reading -----------------------------------------------------------------------

    def records(self, dataset_id: str | None = None, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The records as you see them (local edits applied)."""
        from localstore.ops.queries import list_records

        return list_records(self.store, dataset_id, limit=limit)

    def get(self, record_id: str) -> dict[str, Any]:
        """One record, as you see it (local edits applied)."""
        from localstore.ops.queries import get_record

        return get_record(self.store, record_id)

    def query(self, sql: str, params: tuple[Any, ...] = (), *, write: bool = False) -> QueryResult:
        """One SQL statement; ``write`` lets it change ``records`` (queued as edits)."""
        from localstore.ops.queries import run_sql

        return run_sql(self.store, sql, params, write=write)

    def search(self, text: str, *, dataset_id: str | None = None, limit: int | None = 20) -> list[SearchHit]:
        """Full-text search over the messages."""
        from localstore.ops.search import search

        return search(self.store, text, dataset_id=dataset_id, limit=limit)

    def status(self, *, details: bool = False) -> Status:
        from localstore.ops.queries import status

        return status(self.store, details=details)

    def diff(self, record_id: str | None = None) -> str:
        from localstore.ops.queries import diff

        return diff(self.store, record_id)

    def log(self, record_id: str | None = None, *, limit: int | None = 50) -> list[dict[str, Any]]:
        """The change log, newest first."""
        from localstore.ops.queries import change_log

        return change_log(self.store, record_id=record_id, limit=limit)

    def conflicts(self) -> list[dict[str, Any]]:
        from localstore.ops.queries import conflict_list

        return conflict_list(self.store)

    def session(self) -> Session:
        """A read-only sqlmodel Session for typed reads over ``localstore.models``::

            from sqlmodel import select
            from localstore.models import ChangeRow

            with store.session() as s:
                pending = s.exec(select(ChangeRow).where(ChangeRow.state == "pending")).all()
        """
        from localstore.store.models import session

        return session(self.store)

    # -- editing (queued until sync) ---------------------------------------------------

    def set(self, record_id: str, properties: Mapping[str, Any]) -> EditResult:
        """Set property keys (the others stay)."""
        from localstore.ops.edits import set_properties

        return set_properties(self.store, record_id, properties)

    def unset(self, record_id: str, *keys: str) -> EditResult:
        from localstore.ops.edits import unset_properties

        return unset_properties(self.store, record_id, keys)

    def edit(
        self,
        record_id: str,
        *,
        payload: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> EditResult:
        """Replace the payload and/or the whole properties object."""
        from localstore.ops.edits import edit_record

        return edit_record(self.store, record_id, payload=payload, properties=properties)

    def rm(self, *record_ids: str) -> list[DeleteResult]:
        from localstore.ops.edits import delete_records

        return delete_records(self.store, record_ids)

    def add(
        self, dataset_id: str, payload: Mapping[str, Any], properties: Mapping[str, Any] | None = None
    ) -> str:
        """Create a record offline; returns its provisional id."""
        from localstore.ops.edits import add_record

        return add_record(self.store, dataset_id, payload, properties)

    def revert(self, record_id: str) -> str:
        """Drop a record's local changes."""
        from localstore.ops.edits import revert

        return revert(self.store, record_id)

    def set_where(self, where: str, properties: Mapping[str, Any], *, dry_run: bool = False) -> Any:
        """``set`` on every record matching a SQL condition over ``records``."""
        from localstore.ops.bulk import set_where

        return set_where(self.store, where, properties, dry_run=dry_run)

    def resolve(
        self,
        record_id: str,
        choice: Choice,
        merged: dict[str, Any] | None = None,
        parts: Sequence[str] | Iterable[str] = (),
    ) -> Any:
        """Settle a conflict: ``ours``, ``theirs`` (whole or by ``parts``) or ``file``
        with a ``merged`` ``{"payload": …, "properties": …}``."""
        from localstore.ops.resolve import resolve_conflict

        return resolve_conflict(self.store, record_id, choice, merged, tuple(parts))
