"""Store → files: write the store's records into a checkout folder (localstore.files.checkout_dir).

Creates follow ``id_map`` to their server ids (the file is renamed), files of records
that changed are rewritten, files of records gone are removed and conflict files kept in
step — but a file whose bytes differ from what was last written or processed holds the
user's edits and is never overwritten or removed.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore.core.jsonvalue import pretty
from localstore.files.fs import (
    Unsafe,
    canonical_uuid,
    conflict_rel,
    content_hash,
    record_rel,
    render,
    sha256,
)
from localstore.files.manifest import Entry, Version
from localstore.ops.edits import resolve_record_id
from localstore.ops.queries import conflict_list

if TYPE_CHECKING:
    from localstore.files.checkout_dir import Checkout


@dataclass
class CheckoutReport:
    directory: str
    records: int = 0
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    renamed: list[tuple[str, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # files with edits not overwritten/removed
    skipped: list[str] = field(default_factory=list)  # links, bad ids, unsafe folders
    conflicts_written: list[str] = field(default_factory=list)  # new conflict files (relative)
    conflicts_removed: list[str] = field(default_factory=list)  # conflict files of settled records

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def refresh(co: Checkout) -> CheckoutReport:
    """Write the store's records to the folder: follow creates to their server ids,
    rewrite files whose record changed, remove files of records gone, keep conflict
    files in step. A file edited since it was last written or processed is never
    overwritten or removed (it is listed in ``kept``)."""
    report = CheckoutReport(str(co.root))
    co.needs_refresh = False
    _follow_id_map(co, report)
    by_id = {entry.id: rel for rel, entry in co.files.items()}
    seen: set[str] = set()
    bad: set[str] = set()
    for scope in [None] if co.manifest.datasets is None else list(co.manifest.datasets):
        if scope is not None:
            _dataset_dir(co, scope, bad, report)
        for record in _records(co, scope):
            rid, ds = record.id, record.dataset_id
            if canonical_uuid(rid) is None or canonical_uuid(ds) is None:
                report.skipped.append(f"record {rid!r} of dataset {ds!r}: not a UUID, no file written")
                continue
            rel = by_id.get(rid, record_rel(ds, rid))
            seen.add(rel)  # kept in the manifest even when its folder cannot be used now
            if _dataset_dir(co, ds, bad, report) is None:
                continue
            report.records += 1
            _refresh_one(co, rel, record, report)
    for rel in sorted(set(co.files) - seen):
        _drop_stale(co, rel, report)
    for rel, entry in list(co.manifest.gone.items()):  # a delete no longer pending: nothing to undo
        rid = resolve_record_id(co.store.conn, entry.id)
        if co.store.conn.execute(
            "SELECT 1 FROM working WHERE record_id = ? AND deleted = 1", (rid,)
        ).fetchone() is None or rel in co.files:
            del co.manifest.gone[rel]
            co.dirty = True
    _refresh_conflicts(co, report)
    return report


def _dataset_dir(co: Checkout, ds: str, bad: set[str], report: CheckoutReport) -> Path | None:
    if ds in bad:
        return None
    try:
        return co.folder.dataset_dir(ds, create=True)
    except Unsafe as exc:
        bad.add(ds)
        report.skipped.append(f"dataset {ds}: {exc}; its records were skipped")
        return None


def _follow_id_map(co: Checkout, report: CheckoutReport) -> None:
    for rel, entry in sorted(co.files.items()):
        current = resolve_record_id(co.store.conn, entry.id)
        if current == entry.id:
            continue
        entry.id = current
        co.dirty = True
        ds = rel.split("/")[0]
        target = record_rel(ds, current)
        if rel == target or target in co.files:
            continue
        try:
            unedited = _unedited(co, rel, entry)
            if unedited and co.folder.rename(rel, target):
                co.files[target] = co.files.pop(rel)
                report.renamed.append((rel, target))
        except (Unsafe, OSError) as exc:
            report.skipped.append(f"{co.shown(rel)}: not renamed ({exc})")


def _unedited(co: Checkout, rel: str, entry: Entry) -> bool:
    disk = co.folder.read(rel)
    return not entry.held and disk is not None and sha256(disk) == entry.sha256


@dataclass(frozen=True)
class _Record:
    """A record as the store shows it, with the server version under it (the mirror's)."""

    id: str
    dataset_id: str
    payload: Any
    properties: Any
    remote_at: str | None
    remote_payload: Any
    remote_properties: Any

    @property
    def content(self) -> str:
        return content_hash(self.payload, self.properties)

    @property
    def remote(self) -> str | None:
        return None if self.remote_at is None else content_hash(self.remote_payload, self.remote_properties)


def _records(co: Checkout, dataset_id: str | None) -> list[_Record]:
    sql = """SELECT r.id, r.dataset_id, r.payload, r.properties, m.updated_at, m.payload, m.properties
             FROM records AS r LEFT JOIN mirror AS m ON m.id = r.id AND m.deleted_at IS NULL"""
    params: tuple[str, ...] = ()
    if dataset_id is not None:
        sql += " WHERE r.dataset_id = ?"
        params = (dataset_id,)
    rows = co.store.conn.execute(sql + " ORDER BY r.dataset_id, r.created_at, r.id", params).fetchall()
    return [
        _Record(rid, ds, json.loads(p), json.loads(q), at, None if mp is None else json.loads(mp),
                None if mq is None else json.loads(mq))
        for rid, ds, p, q, at, mp, mq in rows
    ]


def _version(co: Checkout, record: _Record) -> Version:
    """The version a file showing the record as the store shows it now stands on."""
    remote = None
    if record.remote_at is not None:
        remote = co.objects.put(record.remote_payload, record.remote_properties)
    return Version(co.objects.put(record.payload, record.properties), record.remote_at, remote)


def _refresh_one(co: Checkout, rel: str, record: _Record, report: CheckoutReport) -> None:
    rid = record.id
    entry = co.files.get(rel)
    latest = entry.latest if entry is not None else None
    if entry is not None and entry.id == rid and latest is not None and latest.content == record.content:
        report.unchanged += 1
        if not entry.held and (latest.remote_at, latest.remote) != (record.remote_at, record.remote):
            # the file shows what the store shows, and the server version under it moved
            # (a push of ours landed, a pull changed nothing the file shows): an unedited
            # file stands on the new one
            with contextlib.suppress(Unsafe, OSError):
                disk = co.folder.read(rel)
                if disk is not None and sha256(disk) == entry.sha256:
                    entry.add(_version(co, record))
                    co.dirty = True
        return
    data = render(record.payload, record.properties)
    try:
        disk = co.folder.read(rel)
        if entry is None and disk is not None:
            if sha256(disk) != sha256(data) and not _same_record(disk, record.content):
                report.kept.append(f"{co.shown(rel)}: not written by this checkout and differs; left alone")
                return
            co.files[rel] = Entry(rid, sha256(disk), [_version(co, record)])
            co.dirty = True
            report.unchanged += 1
            return
        if entry is not None and disk is None:
            report.kept.append(f"{co.shown(rel)}: deleted on disk; `localstore watch` queues the delete")
            return
        if entry is not None and disk is not None and (entry.held or sha256(disk) != entry.sha256):
            report.kept.append(f"{co.shown(rel)}: holds edits not queued yet; not overwritten")
            return
        version = _version(co, record)  # kept before the file names it
        co.folder.write(rel, data)
    except Unsafe as exc:
        report.skipped.append(f"{co.shown(rel)}: {exc}")
        return
    updated = Entry(rid, sha256(data), list(entry.versions) if entry is not None and entry.id == rid else [])
    updated.add(version)
    co.files[rel] = updated
    co.dirty = True
    report.written += 1


def _drop_stale(co: Checkout, rel: str, report: CheckoutReport) -> None:
    entry = co.files[rel]
    try:
        disk = co.folder.read(rel)
        if disk is not None and (entry.held or sha256(disk) != entry.sha256):
            report.kept.append(f"{co.shown(rel)}: record {entry.id} is gone but the file has edits; left alone")
            return
        if disk is not None:
            co.folder.remove(rel)
            report.removed += 1
    except Unsafe as exc:
        report.skipped.append(f"{co.shown(rel)}: {exc}")
    del co.files[rel]
    co.dirty = True


def _refresh_conflicts(co: Checkout, report: CheckoutReport) -> None:
    wanted: dict[str, bytes] = {}
    scope = co.manifest.datasets
    for row in conflict_list(co.store):
        rid, ds = row["record_id"], row["dataset_id"]
        if canonical_uuid(rid) is None or canonical_uuid(ds) is None:
            continue
        if scope is not None and ds not in scope:
            continue
        body = {k: row[k] for k in ("record_id", "parts", "base", "local", "remote", "detected_at")}
        body["resolve_with"] = f"localstore resolve {rid} --ours | --theirs | --file MERGED.json"
        wanted[conflict_rel(ds, rid)] = pretty(body).encode()
    for rel, data in sorted(wanted.items()):
        name = rel.split("/")[1]
        try:
            path = co.folder.dataset_dir(rel.split("/")[0], create=True) / name
            if co.manifest.conflicts.get(rel) == sha256(data) and path.is_file() and not path.is_symlink():
                continue
            co.folder.write(rel, data)
        except Unsafe as exc:
            report.skipped.append(f"{co.shown(rel)}: {exc}")
            continue
        if rel not in co.manifest.conflicts:
            report.conflicts_written.append(rel)
        co.manifest.conflicts[rel] = sha256(data)
        co.dirty = True
    for rel in sorted(set(co.manifest.conflicts) - set(wanted)):
        with contextlib.suppress(Unsafe, OSError):
            co.folder.remove(rel)
        del co.manifest.conflicts[rel]
        co.dirty = True
        report.conflicts_removed.append(rel)


def _same_record(disk: bytes, content: str) -> bool:
    try:
        value = json.loads(disk)
    except ValueError:
        return False
    return isinstance(value, dict) and content_hash(value.get("payload"), value.get("properties")) == content
