"""The checkout's memory: the hidden manifest ``DIR/.localstore-checkout.json`` and the
contents it refers to.

For each file the manifest holds the record it holds, the hash of the bytes last written
or processed, and the **versions** the file was written from (or processed into), newest
last — each the content it showed and the server version (``updated_at`` and content) it
stood on. A later save is merged 3-way against the version it was made from, so a stale
file never reverts what changed since. Contents are kept once each, by hash, in the
hidden folder ``DIR/.localstore-versions/`` (``Objects``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localstore.errors import UsageError
from localstore.files.fs import (
    CONFLICT_SUFFIX,
    RECORD_SUFFIX,
    Folder,
    Unsafe,
    atomic_write,
    canonical_uuid,
    content_hash,
    split_rel,
)
from localstore.store.jsontext import canonical

MANIFEST_NAME = ".localstore-checkout.json"
OBJECTS_NAME = ".localstore-versions"
MANIFEST_VERSION = 2
KEEP_VERSIONS = 6  # versions remembered per file: a buffer older than that is merged against the oldest


@dataclass
class Version:
    """A version a file was written from (or a save of it was processed into): the
    content it showed, and the server version (the mirror's) it stood on then."""

    content: str  # content_hash, kept in the objects folder
    remote_at: str | None = None  # the mirror's updated_at (None: not on the server)
    remote: str | None = None  # content_hash of the mirror's content

    def to_json(self) -> dict[str, Any]:
        return {"c": self.content, "at": self.remote_at, "r": self.remote}

    @classmethod
    def from_json(cls, data: Any) -> Version | None:
        if not isinstance(data, dict) or not _is_hash(data.get("c")):
            return None
        at, remote = data.get("at"), data.get("r")
        return cls(data["c"], at if isinstance(at, str) else None, remote if _is_hash(remote) else None)


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


@dataclass
class Entry:
    id: str  # the record the file holds (a provisional id until its create is pushed)
    sha256: str  # the bytes last written or processed
    versions: list[Version] = field(default_factory=list)  # oldest first
    held: bool = False  # the file holds a save not queued (it clashed with the store)
    creating: bool = False  # saved before its create was committed: checked on open
    legacy: tuple[str, str] | None = None  # part hashes of a version-1 manifest, until upgraded

    @property
    def latest(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def add(self, version: Version) -> None:
        if self.versions and self.versions[-1] == version:
            return
        self.versions = [*[v for v in self.versions if v != version][-(KEEP_VERSIONS - 1):], version]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "sha256": self.sha256, "versions": [v.to_json() for v in self.versions]}
        if self.held:
            out["held"] = True
        if self.creating:
            out["creating"] = True
        return out


@dataclass
class Manifest:
    store: str
    datasets: list[str] | None = None  # None: every dataset in the store
    files: dict[str, Entry] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)  # rel path -> sha256 written
    gone: dict[str, Entry] = field(default_factory=dict)  # files removed, their delete queued: a restore's base

    @classmethod
    def load(cls, folder: Folder) -> Manifest | None:
        path = folder.root / MANIFEST_NAME
        if path.is_symlink():
            raise UsageError(f"{path} is a symbolic link; localstore never follows links")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path} is damaged ({exc}); delete it and run checkout again") from None
        if not isinstance(data, dict) or data.get("version") not in (1, MANIFEST_VERSION):
            raise UsageError(f"{path} is not a localstore checkout manifest this version knows")
        datasets = data.get("datasets")
        files: dict[str, Entry] = {}
        gone: dict[str, Entry] = {}
        for table, into in (("files", files), ("gone", gone)):
            for rel, e in (data.get(table) or {}).items():
                if not (split_rel(rel) and isinstance(e, dict) and canonical_uuid(str(e.get("id")))):
                    continue
                entry = Entry(str(e["id"]), str(e.get("sha256")), held=bool(e.get("held")),
                              creating=bool(e.get("creating")))
                if data["version"] == 1:
                    entry.legacy = (str(e.get("payload")), str(e.get("properties")))
                else:
                    entry.versions = [v for v in map(Version.from_json, e.get("versions") or []) if v is not None]
                into[rel] = entry
        conflicts = {
            rel: str(h)
            for rel, h in (data.get("conflicts") or {}).items()
            if rel.endswith(CONFLICT_SUFFIX) and split_rel(rel[: -len(CONFLICT_SUFFIX)] + RECORD_SUFFIX)
        }
        return cls(
            store=str(data.get("store") or ""),
            datasets=None if datasets is None else [d for d in datasets if canonical_uuid(d)],
            files=files,
            conflicts=conflicts,
            gone=gone,
        )

    def save(self, folder: Folder) -> None:
        data = {
            "version": MANIFEST_VERSION,
            "store": self.store,
            "datasets": self.datasets,
            "files": {rel: e.to_json() for rel, e in sorted(self.files.items())},
            "conflicts": dict(sorted(self.conflicts.items())),
            "gone": {rel: e.to_json() for rel, e in sorted(self.gone.items())},
        }
        atomic_write(folder.root / MANIFEST_NAME, canonical(data).encode())

    def referenced(self) -> set[str]:
        entries = [*self.files.values(), *self.gone.values()]
        return {h for e in entries for v in e.versions for h in (v.content, v.remote) if h}


class Objects:
    """The contents files were written from, one file each named by its hash, in the
    hidden folder ``DIR/.localstore-versions`` (never through a link). Written before the
    manifest names them; unreferenced ones are swept when a checkout or watcher starts."""

    def __init__(self, root: Path) -> None:
        self.dir = root / OBJECTS_NAME
        self._have: set[str] = set()
        self._cache: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def _folder(self) -> Path:
        try:
            st = os.lstat(self.dir)
        except FileNotFoundError:
            self.dir.mkdir(mode=0o700)
            return self.dir
        if not stat.S_ISDIR(st.st_mode):
            raise Unsafe(f"{self.dir} is not a folder (a link is never followed)")
        return self.dir

    def put(self, payload: dict[str, Any], properties: dict[str, Any]) -> str:
        digest = content_hash(payload, properties)
        if digest in self._have:
            return digest
        path = self._folder() / f"{digest}.json"
        if not os.path.lexists(path):
            atomic_write(path, canonical({"payload": payload, "properties": properties}).encode())
        self._have.add(digest)
        self._cache[digest] = (payload, properties)
        return digest

    def get(self, digest: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The content of a hash; None when it is missing or damaged."""
        if digest in self._cache:
            return self._cache[digest]
        try:
            fd = os.open(self.dir / f"{digest}.json", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
        try:
            value = json.loads(data)
            payload, properties = value["payload"], value["properties"]
        except (ValueError, KeyError, TypeError):
            return None
        if content_hash(payload, properties) != digest:
            return None
        self._have.add(digest)
        self._cache[digest] = (payload, properties)
        return payload, properties

    def sweep(self, keep: set[str]) -> None:
        """Remove the contents no file refers to any more."""
        try:
            names = os.listdir(self._folder())
        except (OSError, Unsafe):
            return
        for name in names:
            stem, _, ext = name.partition(".")
            if ext == "json" and _is_hash(stem) and stem not in keep:
                with contextlib.suppress(OSError):
                    os.unlink(self.dir / name)
                self._have.discard(stem)
                self._cache.pop(stem, None)
