"""localstore — an offline, local-first store for Mistral AI observability dataset records.

    import localstore

    with localstore.open("my.db") as store:       # the SQLite file (created if needed)
        store.pull("5f0c…")                         # mirror a dataset (MISTRAL_API_KEY)
        store.set("9a1e…", {"label": "reviewed"})   # queued offline
        print(store.status().to_dict())
        report = store.sync()                       # push, then pull

Importing this package is cheap on purpose: the network stack (httpx) and SQLAlchemy
are imported only by what uses them (``store.pull``, ``store.session()`` …).
``localstore.models`` holds the sqlmodel classes for typed reads (it imports SQLAlchemy).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from localstore.version import __version__

if TYPE_CHECKING:
    from localstore.api import Client
    from localstore.facade import LocalStore

__all__ = ["LocalStore", "__version__", "open"]


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    server_url: str | None = None,
    api_key: str | None = None,
    client: Client | None = None,
) -> LocalStore:
    """Open (or create) a store file; ``None``: the default one in your user data dir."""
    from localstore.facade import LocalStore

    return LocalStore.open(path, server_url=server_url, api_key=api_key, client=client)


def __getattr__(name: str) -> Any:
    if name == "LocalStore":
        from localstore.facade import LocalStore

        return LocalStore
    raise AttributeError(f"module 'localstore' has no attribute {name!r}")
