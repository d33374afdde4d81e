"""Records as files: ``checkout`` writes each record as ``DIR/<dataset_id>/<record_id>.json``
and the watcher (localstore.files_watch) turns edits of those files into queued changes.

    report = checkout(store, "records/")            # write / refresh the folder
    for change in scan_changes(store, "records/"):  # what differs from the manifest
        apply_file_event(store, "records/", change.path)
    refresh_files(store, "records/")                # after a sync: the store's state on disk
    watch(store, "records/", client_factory=..., sync_every=60, stop_event=event)

A hidden manifest (localstore.files_fs) remembers, for each file, the bytes last written
or processed: a file whose bytes still match was not edited since, so it may be
refreshed or removed; any other file holds the user's edits and is never overwritten.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .edits import EditResult, add_record, delete_records, edit_record, resolve_record_id, revert
from .errors import LocalstoreError, UsageError
from .files_fs import (
    Entry,
    FileProblem,
    Folder,
    Manifest,
    Unsafe,
    canonical_uuid,
    checkout_root,
    is_record_name,
    parse_record,
    part_hash,
    sha256,
    split_rel,
)
from .files_refresh import CheckoutReport, refresh
from .ids import parse_uuid
from .store import Store

if TYPE_CHECKING:
    from .api import Client
    from .files_watch import WatchReport

__all__ = [
    "Change",
    "Checkout",
    "CheckoutReport",
    "Outcome",
    "apply_file_event",
    "checkout",
    "refresh_files",
    "scan_changes",
    "watch",
]


@dataclass(frozen=True)
class Change:
    kind: Literal["added", "modified", "deleted"]
    path: Path
    record_id: str | None = None


Action = Literal[
    "edited", "created", "deleted", "restored", "held", "unchanged", "invalid", "refused", "ignored",
    "folder_gone",
]


@dataclass(frozen=True)
class Outcome:
    path: Path
    action: Action
    record_id: str | None = None
    kinds: tuple[str, ...] = ()
    message: str | None = None  # one line for the user; None when there is nothing to say


class Checkout:
    """An open checkout folder with its manifest in memory. Not thread-safe: one watcher
    thread uses it; ``save()`` writes the manifest back."""

    def __init__(self, store: Store, folder: Folder, manifest: Manifest) -> None:
        self.store = store
        self.folder = folder
        self.root = folder.root
        self.manifest = manifest
        self.invalid: set[str] = set()  # files reported invalid, until fixed
        self.refused: dict[str, str] = {}  # files the store refused (e.g. a conflict): retried
        self.fresh = False  # the manifest did not exist before
        self.needs_refresh = False  # set by apply() when the folder should be refreshed now
        self._warned: set[str] = set()
        self.dirty = False

    @classmethod
    def open(cls, store: Store, directory: str | os.PathLike[str], *, create: bool = False) -> Checkout:
        folder = Folder(checkout_root(directory, create=create))
        manifest = Manifest.load(folder)
        fresh = manifest is None
        if manifest is None:
            if not create:
                raise UsageError(f"{folder.root} is not a checkout; run `localstore checkout {folder.root}` first")
            manifest = Manifest(store=str(store.path.resolve()))
        elif manifest.store and Path(manifest.store) != store.path.resolve():
            raise UsageError(
                f"{folder.root} was checked out from the store {manifest.store}, not {store.path}; "
                f"use --db {manifest.store}"
            )
        co = cls(store, folder, manifest)
        co.fresh = fresh
        return co

    def save(self) -> None:
        if self.dirty:
            self.manifest.save(self.folder)
            self.dirty = False

    @property
    def files(self) -> dict[str, Entry]:
        return self.manifest.files

    def shown(self, rel: str) -> str:
        return str(self.root / rel)

    def rel(self, path: str | os.PathLike[str]) -> str | None:
        """The relative path of a record file under the checkout, or None."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(self.root).as_posix()
        except ValueError:
            return None
        return rel if split_rel(rel) else None

    def _warn_once(self, key: str, message: str) -> str | None:
        if key in self._warned:
            return None
        self._warned.add(key)
        return message

    def refresh(self) -> CheckoutReport:
        """Write the store's records to the folder (see localstore.files_refresh)."""
        return refresh(self)

    # ------------------------------------------------------------ files → store

    def scan(self) -> list[Change]:
        """Files that differ from the manifest: edited, deleted, or new."""
        on_disk = set(self.folder.record_files())
        changes: list[Change] = []
        for rel, entry in sorted(self.files.items()):
            if rel not in on_disk:
                changes.append(Change("deleted", self.root / rel, entry.id))
                continue
            try:
                disk = self.folder.read(rel)
            except Unsafe:
                disk = b""
            if disk is None or sha256(disk) != entry.sha256:
                changes.append(Change("modified", self.root / rel, entry.id))
        changes += [Change("added", self.root / rel) for rel in sorted(on_disk - set(self.files))]
        return changes

    def apply(self, path: str | os.PathLike[str], *, retry: bool = False) -> Outcome:
        """Bring the store in line with one file as it is now (whatever the event was):
        queue what differs, a delete for a removed file, a create for a new one. With
        ``retry``, a refusal already reported for this file is not reported again."""
        rel = self.rel(path)
        target = Path(path)
        if rel is None:
            return Outcome(target, "ignored")
        shown = self.shown(rel)
        try:
            disk = self.folder.read(rel)
        except Unsafe as exc:
            return Outcome(target, "refused", message=self._warn_once(rel, f"skipped {exc}"))
        entry = self.files.get(rel)
        if disk is None:
            self.invalid.discard(rel)
            self.refused.pop(rel, None)
            if entry is None:
                return Outcome(target, "ignored")
            if not os.path.isdir(self.root / rel.split("/")[0]):
                # a whole dataset folder removed or moved away is not a request to delete
                # every record of the dataset: forget the file, the next refresh restores it
                del self.files[rel]
                self.dirty = self.needs_refresh = True
                return Outcome(target, "folder_gone", entry.id)
            return self._removed(target, rel, entry)
        if entry is not None and sha256(disk) == entry.sha256:
            if entry.held:
                self._unhold(rel, entry, disk)
            if rel in self.invalid:
                self.invalid.discard(rel)
                return Outcome(target, "unchanged", entry.id, message=f"{shown}: valid again; nothing to queue")
            return Outcome(target, "unchanged", entry.id)
        try:
            payload, properties = parse_record(disk, shown)
        except FileProblem as problem:
            self.invalid.add(rel)
            return Outcome(target, "invalid", message=f"{problem}; nothing queued")
        self.invalid.discard(rel)
        try:
            outcome, new_entry = self._queue(target, rel, entry, payload, properties, sha256(disk))
        except (LocalstoreError, OSError) as exc:
            message = f"{shown}: {exc}; nothing queued"
            repeated = retry and self.refused.get(rel) == message
            self.refused[rel] = message
            return Outcome(target, "refused", message=None if repeated else message)
        self.refused.pop(rel, None)
        self.files[rel] = new_entry
        self.dirty = True
        if outcome.action == "created":
            self.save()  # a create must not be queued twice if the watcher dies now
        return outcome

    def _queue(
        self,
        target: Path,
        rel: str,
        entry: Entry | None,
        payload: dict[str, Any],
        properties: dict[str, Any],
        digest: str,
    ) -> tuple[Outcome, Entry]:
        """Queue the parts the user changed. A part is compared with the store state the
        file was based on (the manifest), so a part changed only in the store since (a
        pull) is not reverted, and a part changed on both sides is held, not queued."""
        ds, name = rel.split("/")
        mine = {"payload": part_hash(payload), "properties": part_hash(properties)}
        rid = entry.id if entry else canonical_uuid(name[: -len(".json")])
        state = self._record_state(rid, ds) if rid else None
        if state is None:
            new_id = add_record(self.store, ds, payload, properties)
            outcome = Outcome(target, "created", new_id, ("create",), f"{rel}: queued create {new_id}")
            return outcome, Entry(new_id, digest, *mine.values())
        assert rid is not None
        if state == "deleted":
            revert(self.store, rid)
            result = edit_record(self.store, rid, payload=payload, properties=properties)
            outcome = Outcome(target, "restored", result.record_id, result.kinds, f"{rel}: delete undone")
            return outcome, Entry(result.record_id, digest, *mine.values())
        parts: dict[str, Any] = {"payload": payload, "properties": properties}
        held: list[str] = []
        theirs = mine
        if entry is not None:
            theirs = self._current_hashes(rid)
            for part, base in (("payload", entry.payload), ("properties", entry.properties)):
                if mine[part] == base:
                    del parts[part]  # not changed in the file: the store's value stands
                elif theirs[part] != base and theirs[part] != mine[part]:
                    del parts[part]  # changed in the file and in the store: held
                    held.append(part)
        result = edit_record(self.store, rid, **parts) if parts else EditResult(resolve_record_id(self.store.conn, rid), ())
        based = {part: theirs[part] if part in held else mine[part] for part in mine}
        # a held file keeps counting as edited: never overwritten, and its next save queues it
        processed = entry.sha256 if held and entry is not None else digest
        new_entry = Entry(result.record_id, processed, based["payload"], based["properties"], held=bool(held))
        said = [f"queued {' and '.join(result.kinds)} change"] if result.kinds else []
        if held:
            what = " and ".join(held)
            said.append(
                f"not queued: the {what} also changed in the store since this file was written "
                f"(`localstore show {result.record_id}` shows it); save the file again to queue yours"
            )
            return Outcome(target, "held", result.record_id, result.kinds, f"{rel}: {'; '.join(said)}"), new_entry
        if not result.kinds:
            return Outcome(target, "unchanged", result.record_id), new_entry
        return Outcome(target, "edited", result.record_id, result.kinds, f"{rel}: {said[0]}"), new_entry

    def _unhold(self, rel: str, entry: Entry, disk: bytes) -> None:
        """A held file is back to the bytes it had before the held edit: it is based on
        what it holds again, and the next refresh brings the store's version."""
        try:
            payload, properties = parse_record(disk, self.shown(rel))
        except FileProblem:
            return
        entry.payload, entry.properties, entry.held = part_hash(payload), part_hash(properties), False
        self.dirty = self.needs_refresh = True

    def _current_hashes(self, rid: str) -> dict[str, str]:
        row = self.store.conn.execute(
            "SELECT payload, properties FROM records WHERE id = ?", (resolve_record_id(self.store.conn, rid),)
        ).fetchone()
        return {"payload": part_hash(json.loads(row[0])), "properties": part_hash(json.loads(row[1]))}

    def _record_state(self, rid: str, ds: str) -> Literal["live", "deleted"] | None:
        conn = self.store.conn
        rid = resolve_record_id(conn, rid)
        if conn.execute("SELECT 1 FROM records WHERE id = ? AND dataset_id = ?", (rid, ds)).fetchone():
            return "live"
        deleted = conn.execute(
            "SELECT 1 FROM working WHERE record_id = ? AND dataset_id = ? AND deleted = 1 AND state = 'pending'",
            (rid, ds),
        ).fetchone()
        return "deleted" if deleted else None

    def _removed(self, target: Path, rel: str, entry: Entry) -> Outcome:
        del self.files[rel]
        self.dirty = True
        rid = resolve_record_id(self.store.conn, entry.id)
        if self._record_state(rid, rel.split("/")[0]) != "live":
            return Outcome(target, "ignored", rid)
        try:
            delete_records(self.store, [rid])
        except LocalstoreError as exc:
            return Outcome(target, "refused", rid, message=f"{rel} removed, but {exc}; nothing queued")
        return Outcome(target, "deleted", rid, ("delete",), f"{rel} removed: queued delete of {rid}")

    def wants(self, _change: object, path: str) -> bool:
        """watchfiles filter: record files, and dataset folders (moved or removed whole)."""
        try:
            parts = Path(path).relative_to(self.root).parts
        except ValueError:
            return False
        if len(parts) == 1:
            return canonical_uuid(parts[0]) is not None
        return len(parts) == 2 and canonical_uuid(parts[0]) is not None and is_record_name(parts[1])


# ------------------------------------------------------------------ the Python API


def checkout(store: Store, directory: str | os.PathLike[str], dataset_id: str | None = None) -> CheckoutReport:
    """Write records (all datasets, or add ``dataset_id`` to the folder) as files under
    ``directory``; re-running refreshes them. Files with edits not yet queued are kept."""
    ds = None if dataset_id is None else parse_uuid(dataset_id, what="dataset id")
    if ds is not None and store.scalar("SELECT 1 FROM datasets WHERE id = ?", (ds,)) is None:
        raise UsageError(f"dataset {ds} is not in the store; run `localstore pull {ds}` first")
    co = Checkout.open(store, directory, create=True)
    if ds is None:
        co.manifest.datasets = None  # the whole store
    elif co.fresh:
        co.manifest.datasets = [ds]
    elif co.manifest.datasets is not None and ds not in co.manifest.datasets:
        co.manifest.datasets.append(ds)  # one more dataset in this folder
    co.dirty = True
    with co.folder.lock():
        report = co.refresh()
        co.save()
    return report


def refresh_files(store: Store, directory: str | os.PathLike[str]) -> CheckoutReport:
    """The store's current state on disk (what the watcher does after each sync)."""
    co = Checkout.open(store, directory)
    with co.folder.lock():
        report = co.refresh()
        co.save()
    return report


def scan_changes(store: Store, directory: str | os.PathLike[str]) -> list[Change]:
    return Checkout.open(store, directory).scan()


def apply_file_event(store: Store, directory: str | os.PathLike[str], path: str | os.PathLike[str]) -> Outcome:
    """Queue what one file's current state means (edit, delete, create, or nothing)."""
    co = Checkout.open(store, directory)
    with co.folder.lock():
        outcome = co.apply(path)
        co.save()
    return outcome


def watch(
    store: Store,
    directory: str | os.PathLike[str],
    *,
    client_factory: Callable[[], Client] | None = None,
    sync_every: float | None = None,
    stop_event: threading.Event | None = None,
    on_message: Callable[[str], None] = print,
    ready: Callable[[], None] | None = None,
    debounce_ms: int = 800,
    tick_ms: int = 500,
) -> WatchReport:
    """Watch a checkout until ``stop_event`` is set; see localstore.files_watch.watch."""
    from .files_watch import watch as run

    return run(
        store, directory, client_factory=client_factory, sync_every=sync_every, stop_event=stop_event,
        on_message=on_message, ready=ready, debounce_ms=debounce_ms, tick_ms=tick_ms,
    )
