"""Store → files: write the store's records into a checkout folder (localstore.files).

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

from .edits import resolve_record_id
from .files_fs import (
    Entry,
    Unsafe,
    canonical_uuid,
    conflict_rel,
    part_hash,
    record_rel,
    render,
    sha256,
)
from .jsonutil import pretty
from .views import conflict_list, list_records

if TYPE_CHECKING:
    from .files import Checkout


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
        for record in list_records(co.store, scope):
            rid, ds = record["id"], record["dataset_id"]
            if canonical_uuid(rid) is None or canonical_uuid(ds) is None:
                report.skipped.append(f"record {rid!r} of dataset {ds!r}: not a UUID, no file written")
                continue
            if _dataset_dir(co, ds, bad, report) is None:
                continue
            report.records += 1
            rel = by_id.get(rid, record_rel(ds, rid))
            seen.add(rel)
            _refresh_one(co, rel, rid, record["payload"], record["properties"], report)
    for rel in sorted(set(co.files) - seen):
        _drop_stale(co, rel, report)
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


def _refresh_one(co: Checkout, rel: str, rid: str, payload: Any, properties: Any, report: CheckoutReport) -> None:
    hashes = (part_hash(payload), part_hash(properties))
    entry = co.files.get(rel)
    if entry is not None and entry.id == rid and (entry.payload, entry.properties) == hashes:
        report.unchanged += 1
        return
    data = render(payload, properties)
    try:
        disk = co.folder.read(rel)
        if entry is None and disk is not None:
            if sha256(disk) != sha256(data) and not _same_record(disk, hashes):
                report.kept.append(f"{co.shown(rel)}: not written by this checkout and differs; left alone")
                return
            co.files[rel] = Entry(rid, sha256(disk), *hashes)
            co.dirty = True
            report.unchanged += 1
            return
        if entry is not None and disk is None:
            report.kept.append(f"{co.shown(rel)}: deleted on disk; `localstore watch` queues the delete")
            return
        if entry is not None and disk is not None and (entry.held or sha256(disk) != entry.sha256):
            report.kept.append(f"{co.shown(rel)}: holds edits not queued yet; not overwritten")
            return
        co.folder.write(rel, data)
    except Unsafe as exc:
        report.skipped.append(f"{co.shown(rel)}: {exc}")
        return
    co.files[rel] = Entry(rid, sha256(data), *hashes)
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


def _same_record(disk: bytes, hashes: tuple[str, str]) -> bool:
    try:
        value = json.loads(disk)
    except ValueError:
        return False
    return isinstance(value, dict) and (part_hash(value.get("payload")), part_hash(value.get("properties"))) == hashes
