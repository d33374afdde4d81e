"""The emulator's data — datasets, records, import tasks — behind one lock.

The HTTP handlers and tests share these methods, so a test can play a teammate
editing the server directly. With ``db_path`` every write goes through to SQLite
and the next ``EmulatorState`` on that file starts where this one stopped.

Records keep their payload and properties as JSON text: a listing page is then
string concatenation, and 100k records stay small in memory. Stamps are kept (and
stored) in the canonical µs form and rendered in ``timestamp_format`` on the way out:
every dict these methods return is what the API would answer (see ``clock``).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from bisect import bisect_left
from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import Any, Literal

from localstore_emulator.clock import Clock, TimestampFormat
from localstore_emulator.journal import Journal
from localstore_emulator.model import (
    SLUG_RE,
    SOURCES,
    EmulatorError,
    Record,
    dumps,
    encode_payload,
    encode_properties,
    judge_answer,
    slugify,
)
from localstore_emulator.statefile import StateFile

__all__ = ["EmulatorError", "EmulatorState"]

BULK_DELETE_MAX = 500
IMPORT_FROM_DATASET_MAX = 10_000
OWNER_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "localstore-emulator/owner"))
WORKSPACE_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "localstore-emulator/workspace"))
KEPT_EXPORTS = 16

class EmulatorState:
    """Everything the emulated API knows; safe to use from several threads."""

    def __init__(
        self, db_path: str | os.PathLike[str] | None = None, *, timestamp_format: TimestampFormat = "ms"
    ) -> None:
        self._lock = threading.RLock()
        self.clock = Clock(timestamp_format)
        self.journal = Journal()
        self._seq = 0  # the listing order of records: creation order
        self._datasets: dict[str, dict[str, Any]] = {}
        self._slugs: dict[str, str] = {}
        self._records: dict[str, Record] = {}
        self._order: dict[str, list[str]] = {}  # live record ids by seq (creation order)
        self._tasks: dict[str, dict[str, Any]] = {}
        self._task_order: dict[str, list[str]] = {}
        self._exports: OrderedDict[str, str] = OrderedDict()
        self.request_counts: Counter[tuple[str, str]] = Counter()
        self._file: StateFile | None = None
        if db_path is not None:
            self._open(db_path)

    # ---- clock, persistence ------------------------------------------------

    @property
    def timestamp_format(self) -> TimestampFormat:
        return self.clock.format

    @timestamp_format.setter
    def timestamp_format(self, value: TimestampFormat) -> None:
        with self._lock:
            self.clock.configure(timestamp_format=value)

    def _tick(self) -> str:
        return self.clock.tick()

    def _out(self, body: dict[str, Any]) -> dict[str, Any]:
        """A copy of a dataset or task body with its stamps in the API's form."""
        render = self.clock.render
        out = json.loads(dumps(body))
        for key in ("created_at", "updated_at", "deleted_at"):
            if out.get(key) is not None:
                out[key] = render(out[key])
        return out

    def _open(self, path: str | os.PathLike[str]) -> None:
        self._file = StateFile(path)
        datasets, records, tasks = self._file.load()
        stamps: list[str] = []
        for dataset in datasets:
            self._datasets[dataset["id"]] = dataset
            self._slugs[dataset["slug"]] = dataset["id"]
            self._order[dataset["id"]] = []
            self._task_order[dataset["id"]] = []
            stamps.append(dataset["updated_at"])
        for record in records:
            self._seq += 1
            record.seq = self._seq
            self._records[record.id] = record
            stamps.append(record.updated_at)
            owner = self._datasets.get(record.dataset_id)
            if record.deleted_at is None and owner and owner["deleted_at"] is None:
                self._order[record.dataset_id].append(record.id)
        for task in tasks:
            self._tasks[task["id"]] = task
            self._task_order.setdefault(task["dataset_id"], []).append(task["id"])
            stamps.append(task["updated_at"])
        if stamps:
            self.clock.observe(max(stamps))

    def _save_records(self, records: Iterable[Record]) -> None:
        if self._file is not None:
            self._file.save_records(records)

    def _save_body(self, table: str, body: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.save_body(table, body)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    # ---- request accounting ------------------------------------------------

    def count_request(self, method: str, template: str) -> None:
        with self._lock:
            self.request_counts[(method, template)] += 1

    def reset_counts(self) -> None:
        with self._lock:
            self.request_counts.clear()

    # ---- datasets ----------------------------------------------------------

    def _dataset(self, ref: str) -> dict[str, Any]:
        """A live dataset by UUID or slug; 404 DATASET_NOT_FOUND, or 422 for neither shape."""
        ref = str(ref)
        try:
            dataset_id: str | None = str(uuid.UUID(ref))
        except ValueError:
            dataset_id = self._slugs.get(ref)
            if dataset_id is None and not SLUG_RE.match(ref):
                raise EmulatorError(
                    422, f"dataset_id {ref!r} is neither a UUID nor a dataset slug", "VALIDATION_ERROR"
                ) from None
        dataset = self._datasets.get(dataset_id) if dataset_id else None
        if dataset is None or dataset["deleted_at"] is not None:
            raise EmulatorError(404, f"dataset {ref} not found", "DATASET_NOT_FOUND")
        return dataset

    def create_dataset(self, name: str, description: str = "") -> dict[str, Any]:
        with self._lock:
            base = slugify(name)
            slug, n = base, 1
            while slug in self._slugs:
                n += 1
                slug = f"{base}-{n}"
            now = self._tick()
            dataset: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "created_at": now,
                "updated_at": now,
                "deleted_at": None,
                "name": name,
                "slug": slug,
                "description": description,
                "owner_id": OWNER_ID,
                "workspace_id": WORKSPACE_ID,
            }
            self._datasets[dataset["id"]] = dataset
            self._slugs[slug] = dataset["id"]
            self._order[dataset["id"]] = []
            self._task_order[dataset["id"]] = []
            self._save_body("datasets", dataset)
            self.journal.log("create_dataset", None, dataset["id"], self.clock.render(now))
            return self._out(dataset)

    def get_dataset(self, ref: str) -> dict[str, Any] | None:
        with self._lock:
            try:
                return self._out(self._dataset(ref))
            except EmulatorError:
                return None

    def require_dataset(self, ref: str) -> dict[str, Any]:
        with self._lock:
            return self._out(self._dataset(ref))

    def list_datasets(self, q: str | None = None) -> list[dict[str, Any]]:
        """Live datasets by (created_at, id); ``q`` keeps names containing it (any case)."""
        needle = (q or "").lower()
        with self._lock:
            return [
                self._out(d)
                for d in self._datasets.values()
                if d["deleted_at"] is None and needle in d["name"].lower()
            ]

    def update_dataset(
        self, ref: str, name: str | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """PATCH: fields given as None keep their value; the slug never changes."""
        with self._lock:
            dataset = self._dataset(ref)
            if name is not None:
                dataset["name"] = name
            if description is not None:
                dataset["description"] = description
            dataset["updated_at"] = self._tick()
            self._save_body("datasets", dataset)
            self.journal.log("update_dataset", None, dataset["id"], self.clock.render(dataset["updated_at"]))
            return self._out(dataset)

    def delete_dataset(self, ref: str) -> None:
        """Soft delete; the dataset's records answer 404 from then on."""
        with self._lock:
            dataset = self._dataset(ref)
            dataset["deleted_at"] = dataset["updated_at"] = self._tick()
            self._order[dataset["id"]] = []
            self._save_body("datasets", dataset)
            self.journal.log("delete_dataset", None, dataset["id"], self.clock.render(dataset["deleted_at"]))

    # ---- records -----------------------------------------------------------

    def _live(self, record_id: str) -> Record:
        record = self._records.get(str(record_id))
        if (
            record is None
            or record.deleted_at is not None
            or self._datasets[record.dataset_id]["deleted_at"] is not None
        ):
            raise EmulatorError(404, f"dataset record {record_id} not found", "DATASET_RECORD_NOT_FOUND")
        return record

    def _insert(self, dataset_id: str, items: Iterable[tuple[str, str, str]]) -> list[Record]:
        """Append (source, payload JSON, properties JSON) rows; caller holds the lock."""
        created = []
        for source, payload, properties in items:
            now = self._tick()
            self._seq += 1
            created.append(
                Record(str(uuid.uuid4()), dataset_id, now, now, None, source, payload, properties, self._seq)
            )
        render = self.clock.render
        for record in created:
            self._records[record.id] = record
            self.journal.log("create_record", record.id, dataset_id, render(record.created_at))
        self._order[dataset_id].extend(r.id for r in created)
        self._save_records(created)
        return created

    def add_records(self, dataset_id: str, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Bulk create: each item ``{"payload": {...}, "properties": {...}, "source"?: str}``.

        All items are checked before any is stored. The returned dicts share the
        caller's payload and properties objects (the state keeps its own JSON copy).
        """
        encoded = []
        for item in records:
            source = item.get("source", "DIRECT_INPUT")
            if source not in SOURCES:
                raise EmulatorError(422, f"source must be one of {SOURCES}, got {source!r}", "VALIDATION_ERROR")
            payload = item.get("payload")
            properties = item.get("properties", {})
            encoded.append(
                (source, encode_payload(payload), encode_properties(properties), payload, properties)
            )
        with self._lock:
            dataset = self._dataset(dataset_id)
            created = self._insert(dataset["id"], (e[:3] for e in encoded))
            render = self.clock.render
        return [
            {
                "id": r.id,
                "created_at": render(r.created_at),
                "updated_at": render(r.updated_at),
                "deleted_at": None,
                "dataset_id": r.dataset_id,
                "payload": e[3],
                "properties": e[4],
                "source": r.source,
            }
            for r, e in zip(created, encoded, strict=True)
        ]

    def create_record(
        self, dataset_id: str, payload: Any, properties: Any = None
    ) -> dict[str, Any]:
        """What POST .../records does: always stored with source DIRECT_INPUT."""
        item = {"payload": payload, "properties": {} if properties is None else properties}
        return self.add_records(dataset_id, [item])[0]

    def get_record(self, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            try:
                return self._live(record_id).to_dict(self.clock.render)
            except EmulatorError:
                return None

    def require_record(self, record_id: str) -> dict[str, Any]:
        with self._lock:
            return self._live(record_id).to_dict(self.clock.render)

    def list_records(self, dataset_id: str) -> list[dict[str, Any]]:
        with self._lock:
            dataset = self._dataset(dataset_id)
            render = self.clock.render
            return [self._records[i].to_dict(render) for i in self._order[dataset["id"]]]

    def records_page(self, dataset_id: str, page: int, page_size: int) -> tuple[int, str]:
        """(live count, the page's records as comma-joined JSON objects) — the listing hot path."""
        with self._lock:
            order = self._order[self._dataset(dataset_id)["id"]]
            start = (page - 1) * page_size
            records, render = self._records, self.clock.render
            return len(order), ",".join(
                [records[i].to_json(render) for i in order[start : start + page_size]]
            )

    def update_payload(self, record_id: str, payload: Any) -> dict[str, Any]:
        """Replace the payload; ``updated_at`` moves even when nothing changed (unless
        the clock's ``freeze_updated_at`` is on)."""
        text = encode_payload(payload)
        with self._lock:
            record = self._live(record_id)
            record.payload = text
            return self._updated(record, "update_payload")

    def update_properties(self, record_id: str, properties: Any) -> dict[str, Any]:
        """Replace the whole properties map; ``updated_at`` as for ``update_payload``."""
        text = encode_properties(properties)
        with self._lock:
            record = self._live(record_id)
            record.properties = text
            return self._updated(record, "update_properties")

    def _updated(self, record: Record, op: Literal["update_payload", "update_properties"]) -> dict[str, Any]:
        if not self.clock.freeze_updated_at:
            record.updated_at = self._tick()
        self._save_records([record])
        render = self.clock.render
        self.journal.log(op, record.id, record.dataset_id, render(record.updated_at))
        return record.to_dict(render)

    def _unlist(self, records: list[Record]) -> None:
        by_dataset: dict[str, set[str]] = {}
        for record in records:
            by_dataset.setdefault(record.dataset_id, set()).add(record.id)
        records_by_id = self._records
        for dataset_id, ids in by_dataset.items():
            order = self._order[dataset_id]
            if len(ids) == 1:
                (record_id,) = ids
                at = bisect_left(order, records_by_id[record_id].seq, key=lambda i: records_by_id[i].seq)
                del order[at]
            else:
                order[:] = [i for i in order if i not in ids]

    def delete_record(self, record_id: str) -> None:
        """Soft delete: ``deleted_at`` and ``updated_at`` set; GETs and PUTs then 404."""
        with self._lock:
            record = self._live(record_id)
            record.deleted_at = record.updated_at = self._tick()
            self._unlist([record])
            self._save_records([record])
            self.journal.log("delete_record", record.id, record.dataset_id, self.clock.render(record.deleted_at))

    def bulk_delete(self, record_ids: Iterable[str]) -> int:
        """Delete 1..500 records at once; returns how many were live.

        Ids that are unknown or already deleted are ignored rather than failing the
        whole call: a retried bulk-delete then succeeds, like a DELETE that 404s
        means "done" to a client.
        """
        ids = list(dict.fromkeys(str(i) for i in record_ids))
        if not 1 <= len(ids) <= BULK_DELETE_MAX:
            raise EmulatorError(
                422, f"dataset_record_ids must hold 1 to {BULK_DELETE_MAX} ids, got {len(ids)}",
                "VALIDATION_ERROR",
            )
        with self._lock:
            doomed = []
            for record_id in ids:
                try:
                    doomed.append(self._live(record_id))
                except EmulatorError:
                    continue
            render = self.clock.render
            for record in doomed:
                record.deleted_at = record.updated_at = self._tick()
                self.journal.log("delete_record", record.id, record.dataset_id, render(record.deleted_at))
            self._unlist(doomed)
            self._save_records(doomed)
            return len(doomed)

    def judge(self, record_id: str, judge_definition: dict[str, Any]) -> dict[str, Any]:
        """Live-judging: a deterministic answer from (record id, judge name)."""
        with self._lock:
            record = self._live(record_id)
        return judge_answer(record.id, record.payload, judge_definition)

    # ---- import tasks and exports ------------------------------------------

    def _new_task(self, dataset_id: str, message: str, requested: int, imported: int) -> dict[str, Any]:
        now = self._tick()
        task: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "created_at": now,
            "updated_at": now,
            "deleted_at": None,
            "creator_id": OWNER_ID,
            "dataset_id": dataset_id,
            "workspace_id": WORKSPACE_ID,
            "status": "COMPLETED",
            "progress": 100,
            "message": message,
            # not in the spec; the SDK's DatasetImportTask model has it
            "result": {
                "requested_record_count": requested,
                "imported_record_count": imported,
                "skipped_record_count": requested - imported,
            },
        }
        self._tasks[task["id"]] = task
        self._task_order.setdefault(dataset_id, []).append(task["id"])
        self._save_body("tasks", task)
        return self._out(task)

    def create_import_task(self, dataset_id: str, origin: str, requested: int) -> dict[str, Any]:
        """Imports from campaigns, explorer, files and playground: the emulator has none of
        those sources, so the task completes at once with nothing imported."""
        with self._lock:
            dataset = self._dataset(dataset_id)
            message = (
                f"emulator: imports from {origin} are not emulated; "
                f"0 of {requested} requested items imported"
            )
            return self._new_task(dataset["id"], message, requested, 0)

    def import_from_dataset(self, dataset_id: str, record_ids: Iterable[str]) -> dict[str, Any]:
        """Copy live records (from any dataset) into this one as new records; unknown or
        deleted ids are skipped and counted in the task's message."""
        ids = [str(i) for i in record_ids]
        if not 1 <= len(ids) <= IMPORT_FROM_DATASET_MAX:
            raise EmulatorError(
                422, f"dataset_record_ids must hold 1 to {IMPORT_FROM_DATASET_MAX} ids, got {len(ids)}",
                "VALIDATION_ERROR",
            )
        with self._lock:
            dataset = self._dataset(dataset_id)
            sources = []
            for record_id in ids:
                try:
                    sources.append(self._live(record_id))
                except EmulatorError:
                    continue
            self._insert(dataset["id"], [(r.source, r.payload, r.properties) for r in sources])
            skipped = len(ids) - len(sources)
            message = f"imported {len(sources)} of {len(ids)} records; {skipped} unknown or deleted skipped"
            return self._new_task(dataset["id"], message, len(ids), len(sources))

    def list_tasks(self, dataset_id: str) -> list[dict[str, Any]]:
        with self._lock:
            dataset = self._dataset(dataset_id)
            return [self._out(self._tasks[t]) for t in self._task_order[dataset["id"]]]

    def get_task(self, dataset_id: str, task_id: str) -> dict[str, Any]:
        with self._lock:
            dataset = self._dataset(dataset_id)
            task = self._tasks.get(str(task_id))
            if task is None or task["dataset_id"] != dataset["id"]:
                raise EmulatorError(404, f"import task {task_id} not found", "DATASET_TASK_NOT_FOUND")
            return self._out(task)

    def export_jsonl(self, dataset_id: str) -> str:
        """Snapshot the live records as JSON Lines; returns an export id (the last
        ``KEPT_EXPORTS`` snapshots are kept in memory)."""
        with self._lock:
            dataset = self._dataset(dataset_id)
            render = self.clock.render
            lines = [self._records[i].to_json(render) + "\n" for i in self._order[dataset["id"]]]
            export_id = uuid.uuid4().hex
            self._exports[export_id] = "".join(lines)
            while len(self._exports) > KEPT_EXPORTS:
                self._exports.popitem(last=False)
            return export_id

    def export_content(self, export_id: str) -> str | None:
        with self._lock:
            return self._exports.get(export_id)

