"""Where a checkout's files are and how they are touched: the layout, record and conflict
file names, content hashes, and reads and atomic writes that never follow a symbolic link.

Layout: ``DIR/<dataset_id>/<record_id>.json`` holding ``{"payload": …, "properties": …}``,
``DIR/<dataset_id>/<record_id>.conflict.json`` beside a record in conflict, and the hidden
manifest (localstore.files.manifest) beside them. Record files are parsed by
localstore.files.parse.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from localstore.core.jsonvalue import pretty
from localstore.errors import UsageError
from localstore.store.jsontext import canonical

LOCK_NAME = ".localstore-checkout.lock"
RECORD_SUFFIX = ".json"
CONFLICT_SUFFIX = ".conflict.json"


class Unsafe(Exception):
    """A path localstore refuses to use (a symbolic link, not a regular file/folder)."""


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


def content_hash(payload: Any, properties: Any) -> str:
    """The hash of a record's content as JSON sees it (key order ignored)."""
    return sha256(canonical({"payload": payload, "properties": properties}).encode())


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
