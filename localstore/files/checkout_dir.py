"""The checked-out folder: its manifest, what its files mean, and how they are written
(``Checkout``). The Python API over it is ``localstore.files``."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from localstore.core.ids import new_provisional_id
from localstore.core.merge import Content, merge_properties, merge_value
from localstore.core.plan import Remote
from localstore.errors import LocalstoreError, UsageError
from localstore.files.fs import (
    Folder,
    Unsafe,
    canonical_uuid,
    checkout_root,
    is_record_name,
    part_hash,
    sha256,
    split_rel,
)
from localstore.files.manifest import Entry, Manifest, Objects, Version
from localstore.files.parse import FileProblem, parse_record
from localstore.files.refresh import CheckoutReport, refresh
from localstore.ops.edits import add_record, resolve_record_id, validate_object
from localstore.store import ledger
from localstore.store.db import Store

__all__ = ["Change", "Checkout", "CheckoutReport", "FileOutcome"]


@dataclass(frozen=True)
class Change:
    kind: Literal["added", "modified", "deleted"]
    path: Path
    record_id: str | None = None


Action = Literal[
    "edited", "created", "deleted", "restored", "held", "unchanged", "invalid", "refused", "ignored",
    "folder_gone", "vanishing",
]


@dataclass(frozen=True)
class FileOutcome:
    path: Path
    action: Action
    record_id: str | None = None
    kinds: tuple[str, ...] = ()
    message: str | None = None  # one line for the user; None when there is nothing to say


class _Held(Exception):
    """A save changed parts that also changed in the store since its base version."""

    def __init__(self, parts: list[str]) -> None:
        super().__init__(", ".join(parts))
        self.parts = parts


def _describe(parts: list[str]) -> str:
    keys = [p.removeprefix("properties.") for p in parts if p != "payload"]
    said = ["the payload"] if "payload" in parts else []
    if keys:
        said.append(("property " if len(keys) == 1 else "properties ") + ", ".join(keys))
    return " and ".join(said)


def _changed_parts(base: Content, mine: Content) -> list[str]:
    """What a save changed, compared with the version it was made from."""
    parts = [] if _same(base.payload, mine.payload) else ["payload"]
    for key in sorted(base.properties.keys() | mine.properties.keys()):
        if key not in base.properties or key not in mine.properties or not _same(
            base.properties[key], mine.properties[key]
        ):
            parts.append(f"properties.{key}")
    return parts


def _same(a: Any, b: Any) -> bool:
    from localstore.core.jsonvalue import json_equal

    return json_equal(a, b)


class Checkout:
    """An open checkout folder with its manifest in memory. Not thread-safe: one watcher
    thread uses it; ``save()`` writes the manifest back.

    ``grace``: how long (seconds) a file may stay away before its removal queues a
    delete — an editor that renames a file to a backup and writes it anew must not
    delete the record (0: at once). The watcher calls :meth:`due_removals`."""

    def __init__(self, store: Store, folder: Folder, manifest: Manifest, *, grace: float = 0.0) -> None:
        self.store = store
        self.folder = folder
        self.root = folder.root
        self.manifest = manifest
        self.objects = Objects(folder.root)
        self.grace = grace
        self.invalid: dict[str, str] = {}  # files reported invalid -> the sha256 reported
        self.refused: dict[str, str] = {}  # files the store refused (e.g. a conflict): retried
        self.vanished: dict[str, float] = {}  # files gone -> when their delete may be queued
        self.fresh = False  # the manifest did not exist before
        self.needs_refresh = False  # set by apply() when the folder should be refreshed now
        self._warned: set[str] = set()
        self._held_said: dict[str, str] = {}  # held files -> the sha256 reported
        self.dirty = False

    @classmethod
    def open(
        cls, store: Store, directory: str | os.PathLike[str], *, create: bool = False, grace: float = 0.0
    ) -> Checkout:
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
        co = cls(store, folder, manifest, grace=grace)
        co.fresh = fresh
        return co

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock; the manifest is read again under it (another process
        may have written it since this one was opened), and what a crash left half done
        is settled: creates saved but maybe not committed, a version-1 manifest."""
        with self.folder.lock():
            if not self.fresh:
                loaded = Manifest.load(self.folder)
                if loaded is not None:
                    self.manifest = loaded
            self._settle_creates()
            self._upgrade()
            yield

    def save(self) -> None:
        if self.dirty:
            self.manifest.save(self.folder)
            self.dirty = False

    def sweep(self) -> None:
        """Forget the stored contents no file refers to any more."""
        self.objects.sweep(self.manifest.referenced())

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
        """Write the store's records to the folder (see localstore.files.refresh)."""
        return refresh(self)

    # ------------------------------------------------------------ versions

    def version_of_store(self, rid: str, payload: dict[str, Any], properties: dict[str, Any]) -> Version:
        """The version a file showing (payload, properties) of record ``rid`` stands on
        now: that content, and the mirror's version of the record."""
        row = self.store.conn.execute(
            "SELECT updated_at, payload, properties FROM mirror WHERE id = ? AND deleted_at IS NULL", (rid,)
        ).fetchone()
        remote_at = remote = None
        if row is not None:
            remote_at = row[0]
            remote = self.objects.put(json.loads(row[1]), json.loads(row[2]))
        return Version(self.objects.put(payload, properties), remote_at, remote)

    def content(self, digest: str | None) -> Content | None:
        found = None if digest is None else self.objects.get(digest)
        return None if found is None else Content(*found)

    def seen(self, version: Version | None) -> Remote | None:
        """The server version a file's version stood on, for the change log."""
        if version is None or version.remote_at is None:
            return None
        content = self.content(version.remote)
        return None if content is None else Remote(version.remote_at, content)

    def _base(self, entry: Entry | None, mine: Content) -> tuple[Version | None, Content | None]:
        """The version a save was made from: of the versions written into the file, the
        one it differs least from (the newest on a tie). An editor buffer loaded before
        the file was refreshed was made from an older one."""
        best: tuple[int, Version, Content] | None = None
        for version in reversed(entry.versions if entry else []):
            content = self.content(version.content)
            if content is None:
                continue
            distance = len(_changed_parts(content, mine))
            if best is None or distance < best[0]:
                best = (distance, version, content)
        return (None, None) if best is None else (best[1], best[2])

    def _settle_creates(self) -> None:
        """A file whose create was being queued when the process died: if the store has
        the create, the file holds it; if not, the file is new again (queued next)."""
        for rel, entry in list(self.files.items()):
            if not entry.creating:
                continue
            known = self.store.conn.execute(
                """SELECT 1 FROM working WHERE record_id = :id
                   UNION ALL SELECT 1 FROM changes WHERE record_id = :id
                   UNION ALL SELECT 1 FROM id_map WHERE provisional_id = :id LIMIT 1""",
                {"id": entry.id},
            ).fetchone()
            if known:
                entry.creating = False
            else:
                del self.files[rel]
            self.dirty = True

    def _upgrade(self) -> None:
        """Entries of a version-1 manifest (part hashes only) get the version they were
        written from where it can still be known: each part is taken from the file, the
        store or the mirror, whichever still has the value whose hash was kept."""
        for rel, entry in self.files.items():
            if entry.legacy is None:
                continue
            legacy, entry.legacy = entry.legacy, None
            self.dirty = True
            rid = resolve_record_id(self.store.conn, entry.id)
            candidates: list[tuple[Any, Any]] = []
            with contextlib.suppress(Unsafe, FileProblem, OSError):
                disk = self.folder.read(rel)
                if disk is not None:
                    candidates.append(parse_record(disk, rel))
            with contextlib.suppress(LocalstoreError):
                candidates.append(ledger.current(self.store.conn, rid))
            remote = ledger.remote_of_mirror(self.store.conn, rid)
            if remote is not None:
                candidates.append((remote.content.payload, remote.content.properties))
            found = [next((c[i] for c in candidates if part_hash(c[i]) == legacy[i]), None) for i in (0, 1)]
            if found[0] is None or found[1] is None:
                continue  # unknown: a save is compared with the store as it is then
            version = Version(self.objects.put(found[0], found[1]))
            if remote is not None and (part_hash(remote.content.payload), part_hash(remote.content.properties)) == legacy:
                version = self.version_of_store(rid, found[0], found[1])
            entry.versions = [version]

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

    def apply(self, path: str | os.PathLike[str], *, retry: bool = False) -> FileOutcome:
        """Bring the store in line with one file as it is now (whatever the event was):
        queue what differs, a delete for a removed file (after ``grace``), a create for a
        new one. A refusal, an invalid or a held file is reported once per content
        (``retry`` is kept for callers; it changes nothing)."""
        rel = self.rel(path)
        target = Path(path)
        if rel is None:
            return FileOutcome(target, "ignored", message=self._not_read(target))
        shown = self.shown(rel)
        ds = rel.split("/")[0]
        if os.path.islink(self.root / ds):
            # a dataset folder replaced by a link: nothing in it is read or deleted; the
            # refresh says so once, and writes the folder again when the link goes
            self.needs_refresh = True
            return FileOutcome(target, "refused")
        try:
            disk = self.folder.read(rel)
        except Unsafe as exc:
            return FileOutcome(target, "refused", message=self._warn_once(rel, f"skipped {exc}"))
        entry = self.files.get(rel)
        if disk is None:
            self.invalid.pop(rel, None)
            self.refused.pop(rel, None)
            if entry is None:
                return FileOutcome(target, "ignored")
            if not os.path.isdir(self.root / ds):
                # a whole dataset folder removed or moved away is not a request to delete
                # every record of the dataset: forget the file, the next refresh restores it
                del self.files[rel]
                self.vanished.pop(rel, None)
                self.dirty = self.needs_refresh = True
                return FileOutcome(target, "folder_gone", entry.id)
            if self.grace > 0:
                due = self.vanished.setdefault(rel, time.monotonic() + self.grace)
                if time.monotonic() < due:
                    return FileOutcome(target, "vanishing", entry.id)
            self.vanished.pop(rel, None)
            return self._removed(target, rel, entry)
        self.vanished.pop(rel, None)
        digest = sha256(disk)
        restore = entry is None and rel in self.manifest.gone
        if restore:
            # a removed file put back: its delete is undone, and what it holds is merged
            # against the version it was written from, like any save
            entry = self.manifest.gone.pop(rel)
            entry.sha256 = ""
            self.dirty = True
        if entry is not None and digest == entry.sha256:
            if entry.held:  # back to the bytes it had: nothing to hold any more
                entry.held = False
                self.dirty = self.needs_refresh = True
            if self.invalid.pop(rel, None) is not None:
                return FileOutcome(target, "unchanged", entry.id, message=f"{shown}: valid again; nothing to queue")
            return FileOutcome(target, "unchanged", entry.id)
        try:
            payload, properties = parse_record(disk, shown)
        except FileProblem as problem:
            repeated = self.invalid.get(rel) == digest
            self.invalid[rel] = digest
            return FileOutcome(target, "invalid", message=None if repeated else f"{problem}; nothing queued")
        was_invalid = self.invalid.pop(rel, None) is not None
        try:
            outcome = self._queue(target, rel, entry, Content(payload, properties), digest, restore=restore)
        except (LocalstoreError, OSError, Unsafe) as exc:
            if restore and entry is not None:
                self.manifest.gone[rel] = entry  # not undone: tried again later
            message = f"{shown}: {exc}; nothing queued"
            repeated = self.refused.get(rel) == message
            self.refused[rel] = message
            return FileOutcome(target, "refused", message=None if repeated else message)
        self.refused.pop(rel, None)
        if outcome.action == "held":  # said once per content saved
            repeated = self._held_said.get(rel) == digest
            self._held_said[rel] = digest
            if repeated:
                return FileOutcome(target, "held", outcome.record_id)
        else:
            self._held_said.pop(rel, None)
        if was_invalid and outcome.message is None:
            return FileOutcome(target, outcome.action, outcome.record_id, message=f"{shown}: valid again; nothing to queue")
        return outcome

    def due_removals(self) -> list[Path]:
        """Files gone for longer than the grace period: their deletes may be queued now."""
        now = time.monotonic()
        return [self.root / rel for rel, due in sorted(self.vanished.items()) if due <= now]

    def _not_read(self, path: Path) -> str | None:
        """One line for each *.json file the watcher does not read (once each), saying
        why; a new folder is looked into, since files made with it may bring no event."""
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return None
        if not parts or any(p.startswith(".") for p in parts):
            return None
        if os.path.isdir(path) and not os.path.islink(path):
            lines: list[str] = []
            for folder, names, found in os.walk(path):
                names[:] = sorted(n for n in names if not n.startswith("."))
                for name in sorted(found):
                    line = None if self.rel(Path(folder) / name) else self._not_read(Path(folder) / name)
                    if line:
                        lines.append(line)
            return "\n".join(lines) or None
        if not is_record_name(parts[-1]) or not os.path.isfile(path) or os.path.islink(path):
            return None
        if len(parts) == 1:
            why = "files in the checkout's top folder are not records; put it in a dataset folder"
        elif canonical_uuid(parts[0]) is None:
            why = f"{parts[0]}/ is not a dataset folder (its name is not a dataset id)"
        else:
            why = "files in folders inside a dataset folder are not read"
        return self._warn_once(f"ignored:{path}", f"ignored {path}: {why}")

    def _queue(
        self, target: Path, rel: str, entry: Entry | None, mine: Content, digest: str, *, restore: bool = False
    ) -> FileOutcome:
        """Queue what a save changed. It is merged 3-way against the version it was made
        from (see :meth:`_base`): what changed in the store since stands, a part changed
        on both sides to different values holds the file (nothing queued, never
        overwritten), and only the parts that differ from the store are queued."""
        validate_object(mine.payload, "payload")
        validate_object(mine.properties, "properties")
        ds, name = rel.split("/")
        rid = entry.id if entry else canonical_uuid(name[: -len(".json")])
        state = self._record_state(rid, ds) if rid else None
        if state is None and entry is not None and not entry.creating:
            # the file of a record this folder showed, gone from the store since (its
            # delete synced, or deleted on the server): not a new record
            raise UsageError(
                f"record {resolve_record_id(self.store.conn, entry.id)} is no longer in the store (deleted "
                "here or on the server); to keep this content as a new record, save it under a new file name, "
                "or remove the file"
            )
        if state is None:
            return self._create(target, rel, entry, mine, digest)
        assert rid is not None
        if state == "deleted" and not restore:
            # deleted in another way (`localstore rm`): like `set`, a save does not undo it
            shown_id = resolve_record_id(self.store.conn, rid)
            raise UsageError(f"record {shown_id} is deleted locally; `localstore revert {shown_id}` undoes that")
        version, base = self._base(entry, mine)
        try:
            with self.store.transaction() as conn:
                rid = resolve_record_id(conn, rid)
                if state == "deleted":
                    ledger.revert(conn, rid)  # the file is back: its delete is undone
                now = Content(*ledger.current(conn, rid))
                merged, clashes = _merge(base or now, mine, now)
                if clashes:
                    raise _Held(clashes)
                kinds = ledger.edit(conn, rid, merged.payload, merged.properties)
        except _Held as held:
            assert entry is not None  # without a known version the store's is the base: no clash
            entry.held = True  # its bytes stay "edited": never overwritten, merged again on the next save
            if restore:
                self.manifest.gone[rel] = entry  # the delete stays queued; the next save tries again
            self.dirty = True
            return FileOutcome(target, "held", rid, (), f"{rel}: not queued: {_describe(held.parts)} also changed "
                           f"in the store since this file was written (`localstore show {rid}` shows it); take "
                           f"the store's value into the file, or keep yours with `localstore set {rid} KEY=…` "
                           f"(`localstore edit {rid}` for the payload)")
        assert base is not None or version is None
        new_version = Version(
            self.objects.put(mine.payload, mine.properties),
            version.remote_at if version else None,
            version.remote if version else None,
        )
        if version is None:  # no version known: the file stood on the store as it is now
            new_version = self.version_of_store(rid, mine.payload, mine.properties)
        updated = Entry(rid, digest, list(entry.versions) if entry else [])
        updated.add(new_version)
        self.files[rel] = updated
        self.dirty = True
        if not merged.same_as(mine):
            self.needs_refresh = True  # the file should show what the store merged in
        said: list[str] = []
        if kinds:
            said.append(f"queued {' and '.join(kinds)} change")
        if entry is not None and version is not None and version != entry.latest and base is not None:
            what = _describe(_changed_parts(base, mine))
            said.append(f"saved from an older version of the file: only your change to {what} counts, "
                        "what changed in the store since stands" if what else
                        "saved from an older version of the file: nothing of it changed, the store's version stands")
        if state == "deleted":
            return FileOutcome(target, "restored", rid, kinds, f"{rel}: delete undone" + "".join(f"; {s}" for s in said))
        if not kinds:
            return FileOutcome(target, "unchanged", rid, (), f"{rel}: {'; '.join(said)}" if said else None)
        return FileOutcome(target, "edited", rid, kinds, f"{rel}: {'; '.join(said)}")

    def _create(self, target: Path, rel: str, entry: Entry | None, mine: Content, digest: str) -> FileOutcome:
        """A new file: its create. The file's entry (with the create's id, marked
        ``creating``) reaches the manifest on disk before the create is committed, so a
        crash between the two is settled on the next start (see :meth:`_settle_creates`)
        and never makes a second create."""
        ds = rel.split("/")[0]
        if self.store.scalar("SELECT 1 FROM datasets WHERE id = ?", (ds,)) is None:
            raise UsageError(f"dataset {ds} is not in the store; run `localstore pull {ds}` first")
        new_id = new_provisional_id()
        self.files[rel] = Entry(new_id, digest, [Version(self.objects.put(mine.payload, mine.properties))],
                                creating=True)
        self.dirty = True
        try:
            self.save()
            add_record(self.store, ds, mine.payload, mine.properties, record_id=new_id)
        except BaseException:
            if entry is None:
                self.files.pop(rel, None)
            else:
                self.files[rel] = entry
            self.dirty = True
            raise
        self.files[rel].creating = False  # on disk at the next save; settled on start if not
        return FileOutcome(target, "created", new_id, ("create",), f"{rel}: queued create {new_id}")

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

    def _removed(self, target: Path, rel: str, entry: Entry) -> FileOutcome:
        """A file gone (for longer than the grace period): a delete of its record, made
        against the version the file was written from — if the record changed on the
        server since, the sync makes it a delete-vs-edit conflict, not a silent delete."""
        del self.files[rel]
        self.dirty = True
        rid = resolve_record_id(self.store.conn, entry.id)
        if self._record_state(rid, rel.split("/")[0]) != "live":
            return FileOutcome(target, "ignored", rid)
        try:
            with self.store.transaction() as conn:
                result = ledger.delete(conn, rid, seen=self.seen(entry.latest))
        except LocalstoreError as exc:
            return FileOutcome(target, "refused", rid, message=f"{rel} removed, but {exc}; nothing queued")
        if result.dropped_unsent_create:
            return FileOutcome(target, "deleted", rid, (), f"{rel} removed: its create {rid} was never sent; dropped")
        self.manifest.gone[rel] = entry
        return FileOutcome(target, "deleted", rid, ("delete",), f"{rel} removed: queued delete of {rid}")

    def wants(self, _change: object, path: str) -> bool:
        """watchfiles filter: everything but hidden files — record files, dataset folders
        (moved or removed whole), and other *.json files (each told once it is not read)."""
        try:
            parts = Path(path).relative_to(self.root).parts
        except ValueError:
            return False
        return bool(parts) and not any(p.startswith(".") for p in parts)


def _merge(base: Content, mine: Content, now: Content) -> tuple[Content, list[str]]:
    """(merged content, the parts changed on both sides to different values)."""
    payload, clash = merge_value(base.payload, mine.payload, now.payload)
    properties, keys = merge_properties(base.properties, mine.properties, now.properties)
    clashes = (["payload"] if clash else []) + [f"properties.{k}" for k in keys]
    return Content(payload if not clash else now.payload, properties), clashes
