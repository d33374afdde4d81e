"""Records as files: ``checkout`` writes each record as ``DIR/<dataset_id>/<record_id>.json``
and the watcher (localstore.files.watcher) turns edits of those files into queued changes.

    report = checkout(store, "records/")            # write / refresh the folder
    for change in scan_changes(store, "records/"):  # what differs from the manifest
        apply_file_event(store, "records/", change.path)
    refresh_files(store, "records/")                # after a sync: the store's state on disk
    watch(store, "records/", client_factory=..., sync_every=60, stop_event=event)

A hidden manifest (localstore.files.manifest) remembers, for each file, the bytes last written
or processed: a file whose bytes still match was not edited since, so it may be
refreshed or removed; any other file holds the user's edits and is never overwritten.
It also remembers the versions each file was written from: a save is merged 3-way
against the one it was made from, so a stale file never reverts what changed since, and
a removed file's delete is made against the version the file showed.
"""

from __future__ import annotations

import os

from localstore.core.ids import parse_uuid
from localstore.errors import UsageError
from localstore.files.checkout_dir import Change, Checkout, CheckoutReport, FileOutcome
from localstore.files.watcher import WatchReport, watch
from localstore.store.db import Store

__all__ = [
    "Change",
    "Checkout",
    "CheckoutReport",
    "FileOutcome",
    "WatchReport",
    "apply_file_event",
    "checkout",
    "refresh_files",
    "scan_changes",
    "watch",
]


def checkout(store: Store, directory: str | os.PathLike[str], dataset_id: str | None = None) -> CheckoutReport:
    """Write records (all datasets, or add ``dataset_id`` to the folder) as files under
    ``directory``; re-running refreshes them. Files with edits not yet queued are kept."""
    ds = None if dataset_id is None else parse_uuid(dataset_id, what="dataset id")
    if ds is not None and store.scalar("SELECT 1 FROM datasets WHERE id = ?", (ds,)) is None:
        raise UsageError(f"dataset {ds} is not in the store; run `localstore pull {ds}` first")
    co = Checkout.open(store, directory, create=True)
    with co.locked():
        if ds is None:
            co.manifest.datasets = None  # the whole store
        elif co.fresh:
            co.manifest.datasets = [ds]
        elif co.manifest.datasets is not None and ds not in co.manifest.datasets:
            co.manifest.datasets.append(ds)  # one more dataset in this folder
        co.dirty = True
        report = co.refresh()
        co.save()
        co.sweep()
    return report


def refresh_files(store: Store, directory: str | os.PathLike[str]) -> CheckoutReport:
    """The store's current state on disk (what the watcher does after each sync)."""
    co = Checkout.open(store, directory)
    with co.locked():
        report = co.refresh()
        co.save()
    return report


def scan_changes(store: Store, directory: str | os.PathLike[str]) -> list[Change]:
    return Checkout.open(store, directory).scan()


def apply_file_event(store: Store, directory: str | os.PathLike[str], path: str | os.PathLike[str]) -> FileOutcome:
    """Queue what one file's current state means (edit, delete, create, or nothing)."""
    co = Checkout.open(store, directory)
    with co.locked():
        outcome = co.apply(path)
        co.save()
    return outcome
