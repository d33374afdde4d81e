"""The filesystem side of a checkout: the layout, the manifest, reads and atomic writes
that never follow a symbolic link, and record-file parsing with ``path:line:col`` errors.

Layout: ``DIR/<dataset_id>/<record_id>.json`` holding ``{"payload": …, "properties": …}``,
``DIR/<dataset_id>/<record_id>.conflict.json`` beside a record in conflict, and the hidden
manifest ``DIR/.localstore-checkout.json``: for each file the record it holds, the hash of
the bytes last written or processed, and the **versions** the file was written from (or
processed into), newest last — each the content it showed and the server version
(``updated_at`` and content) it stood on. A later save is merged 3-way against the
version it was made from, so a stale file never reverts what changed since. Contents are
kept once each, by hash, in the hidden folder ``DIR/.localstore-versions/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]  # public, untyped in typeshed
from pathlib import Path
from typing import Any

from localstore.core.jsonvalue import pretty
from localstore.errors import UsageError
from localstore.store.jsontext import canonical

MANIFEST_NAME = ".localstore-checkout.json"
LOCK_NAME = ".localstore-checkout.lock"
OBJECTS_NAME = ".localstore-versions"
MANIFEST_VERSION = 2
KEEP_VERSIONS = 6  # versions remembered per file: a buffer older than that is merged against the oldest
RECORD_SUFFIX = ".json"
CONFLICT_SUFFIX = ".conflict.json"
_WS = " \t\n\r"
_CONSTANT = re.compile(r"-?\b(NaN|Infinity)\b")


class Unsafe(Exception):
    """A path localstore refuses to use (a symbolic link, not a regular file/folder)."""


class FileProblem(Exception):
    """A record file that cannot be used; ``str()`` is ``path:line:col: message``."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:
        self.path, self.line, self.col, self.message = path, line, col, message
        super().__init__(f"{path}:{line}:{col}: {message}")


# ------------------------------------------------------------------ names and hashes


def canonical_uuid(text: str) -> str | None:
    """``text`` when it is a UUID in canonical lowercase form, else None: only such ids
    become file or folder names."""
    try:
        return text if str(uuid.UUID(text)) == text else None
    except ValueError:
        return None


def is_record_name(name: str) -> bool:
    """A file name the watcher reads: ``*.json``, not a dotfile, editor temp or conflict file."""
    return (
        name.endswith(RECORD_SUFFIX)
        and not name.endswith(CONFLICT_SUFFIX)
        and not name.startswith((".", "#", "~"))
        and "/" not in name
        and len(name) > len(RECORD_SUFFIX)
    )


def record_rel(dataset_id: str, record_id: str) -> str:
    return f"{dataset_id}/{record_id}{RECORD_SUFFIX}"


def conflict_rel(dataset_id: str, record_id: str) -> str:
    return f"{dataset_id}/{record_id}{CONFLICT_SUFFIX}"


def split_rel(rel: str) -> tuple[str, str] | None:
    """(dataset_id, file name) of a record path relative to the checkout, or None."""
    parts = rel.split("/")
    if len(parts) != 2 or canonical_uuid(parts[0]) is None or not is_record_name(parts[1]):
        return None
    return parts[0], parts[1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def part_hash(value: Any) -> str:
    """The hash of one part (payload or properties) as JSON sees it (key order ignored)."""
    return sha256(canonical(value).encode())


def render(payload: Any, properties: Any) -> bytes:
    return pretty({"payload": payload, "properties": properties}).encode()


# ------------------------------------------------------------------ safe I/O


class Folder:
    """The checkout folder. Every path is ``root/<dataset>/<name>`` built from validated
    parts; the dataset folder and the file are checked with lstat and opened with
    O_NOFOLLOW, so no symbolic link is followed and nothing is written outside root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def dataset_dir(self, dataset_id: str, *, create: bool = False) -> Path:
        if canonical_uuid(dataset_id) is None:
            raise Unsafe(f"{dataset_id!r} is not a dataset id")
        path = self.root / dataset_id
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not create:
                raise
            path.mkdir(mode=0o700)
            st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise Unsafe(f"{path} is a symbolic link; localstore never follows links")
        if not stat.S_ISDIR(st.st_mode):
            raise Unsafe(f"{path} is not a folder")
        return path

    def _path(self, rel: str) -> Path:
        dataset_id, name = rel.split("/")
        if "/" in name or name in ("", ".", ".."):
            raise Unsafe(f"{rel!r} is not a record file name")
        return self.dataset_dir(dataset_id) / name

    def read(self, rel: str) -> bytes | None:
        """The file's bytes; None when it does not exist. Unsafe for a link or a non-file."""
        try:
            path = self._path(rel)
        except FileNotFoundError:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if os.path.islink(path):
                raise Unsafe(f"{path} is a symbolic link; localstore never follows links") from None
            raise Unsafe(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise Unsafe(f"{path} is not a regular file")
            return handle.read()

    def write(self, rel: str, data: bytes) -> None:
        """Atomically (temp file + rename) write a file; refuses to replace a link."""
        path = self._path(rel)
        if path.is_symlink():
            raise Unsafe(f"{path} is a symbolic link; localstore never follows links")
        atomic_write(path, data)

    def remove(self, rel: str) -> bool:
        """Remove a regular file (never a link's target); False when it was not there."""
        try:
            os.unlink(self._path(rel))
        except FileNotFoundError:
            return False
        return True

    def rename(self, old: str, new: str) -> bool:
        """Rename within the checkout; False (nothing done) when ``new`` exists."""
        source, target = self._path(old), self._path(new)
        if os.path.lexists(target):
            return False
        os.rename(source, target)
        return True

    def record_files(self) -> Iterator[str]:
        """Relative paths of the record files on disk (links included, so they are reported)."""
        with os.scandir(self.root) as top:
            folders = sorted(e.name for e in top if canonical_uuid(e.name) and e.is_dir(follow_symlinks=False))
        for dataset_id in folders:
            with os.scandir(self.root / dataset_id) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    if is_record_name(entry.name) and not entry.is_dir(follow_symlinks=False):
                        yield f"{dataset_id}/{entry.name}"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One checkout or watcher at a time per folder."""
        import fcntl

        fd = os.open(self.root / LOCK_NAME, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise UsageError(
                    f"another `localstore watch` or `checkout` is using {self.root}; stop it first"
                ) from None
            yield
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a hidden temp file beside ``path`` (never through a link), then rename it
    over ``path``: readers see the old or the new content, never a partial one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def checkout_root(directory: str | os.PathLike[str], *, create: bool) -> Path:
    """The checkout folder as a real path; the folder itself must not be a link."""
    path = Path(os.path.abspath(directory))
    if path.is_symlink():
        raise UsageError(f"{path} is a symbolic link; give the real folder (localstore never follows links)")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is not a folder")
    if not path.exists():
        if not create:
            raise UsageError(f"{path} does not exist; `localstore checkout {path}` creates it")
        try:
            path.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"cannot create the folder {path}: {exc.strerror}") from None
    return Path(os.path.realpath(path))


# ------------------------------------------------------------------ manifest


def content_hash(payload: Any, properties: Any) -> str:
    """The hash of a record's content as JSON sees it (key order ignored)."""
    return sha256(canonical({"payload": payload, "properties": properties}).encode())


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


# ------------------------------------------------------------------ parsing


def _line_col(text: str, pos: int) -> tuple[int, int]:
    return text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _members(text: str) -> list[tuple[str, int, int]]:
    """(key, key position, value position) of each member of the top-level object of an
    already valid JSON text."""
    decoder = json.JSONDecoder()
    out: list[tuple[str, int, int]] = []
    pos = _skip(text, 0) + 1
    while True:
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
        if text[pos] == "}":
            return out
        key_pos = pos
        key, pos = scanstring(text, pos + 1)
        value_pos = _skip(text, _skip(text, pos) + 1)
        _, pos = decoder.raw_decode(text, value_pos)
        out.append((key, key_pos, value_pos))


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)


def _lone_surrogate(text: str) -> int:
    """The position of the first ``\\uD800``..``\\uDFFF`` escape that is not half of a
    surrogate pair (JSON allows it, UTF-8 cannot hold it)."""
    high: tuple[int, int] | None = None  # (start, end) of a high half waiting for its low half
    for match in _ESCAPE.finditer(text):
        token = match.group(1)
        code = int(token[1:], 16) if len(token) == 5 else None
        if high is not None:
            if match.start() == high[1] and code is not None and 0xDC00 <= code <= 0xDFFF:
                high = None
                continue
            return high[0]
        if code is not None and 0xD800 <= code <= 0xDBFF:
            high = (match.start(), match.end())
        elif code is not None and 0xDC00 <= code <= 0xDFFF:
            return match.start()
    return high[0] if high is not None else 0


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def parse_record(data: bytes, shown: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(payload, properties) of a record file, or FileProblem naming file, line and column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data[: exc.start].decode("utf-8", "replace"), exc.start)
        raise FileProblem(shown, line, col, "not UTF-8 text") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise FileProblem(shown, exc.lineno, exc.colno, exc.msg) from None
    except ValueError as exc:
        match = _CONSTANT.search(text)
        raise FileProblem(shown, *_line_col(text, match.start() if match else 0), str(exc)) from None
    start = _skip(text, 0)
    shape = 'a record file holds {"payload": {…}, "properties": {…}}'
    if not isinstance(value, dict):
        raise FileProblem(shown, *_line_col(text, start), f"{shape}, not a JSON {type(value).__name__}")
    seen: dict[str, int] = {}
    for key, key_pos, value_pos in _members(text):
        where = _line_col(text, key_pos)
        if key in seen:
            raise FileProblem(shown, *where, f'duplicate key "{key}"')
        if key not in ("payload", "properties"):
            raise FileProblem(shown, *where, f'unexpected key "{key}": {shape}')
        if not isinstance(value[key], dict):
            raise FileProblem(shown, *_line_col(text, value_pos), f'"{key}" must be a JSON object')
        seen[key] = key_pos
    for key in ("payload", "properties"):
        if key not in seen:
            raise FileProblem(shown, *_line_col(text, start), f'missing "{key}": {shape}')
    try:
        canonical(value).encode("utf-8")
    except UnicodeEncodeError:
        at = _lone_surrogate(text)
        raise FileProblem(
            shown, *_line_col(text, at), f"{text[at:at + 6]} is half of a surrogate pair, not a character"
        ) from None
    return value["payload"], value["properties"]
