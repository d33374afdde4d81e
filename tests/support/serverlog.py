"""Every change the emulator applies to a record, part by part, with who made it: the
ground truth a model-based test checks a sync's promises against.

A *part* is ``exists``, ``payload`` or ``k:<property key>``; a PUT of the whole
properties map is logged as the keys it changed. Writes made inside
``with log.teammate():`` (a teammate, or the adversary acting between listing pages) are
the teammate's; every other write came in over HTTP, from a localstore under test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from localstore.store.jsontext import canonical

EXISTS, GONE, MISSING = "EXISTS", "GONE", "MISSING"
WRAPPED = ("update_payload", "update_properties", "delete_record", "bulk_delete", "add_records", "delete_dataset")


@dataclass(frozen=True)
class Write:
    pos: int
    record_id: str
    part: str
    value: str  # canonical JSON, or EXISTS / GONE / MISSING
    teammate: bool
    creation: bool = False


def key_part(key: str) -> str:
    return f"k:{key}"


def parts_of(record: dict[str, Any]) -> dict[str, str]:
    out = {"payload": canonical(record["payload"])}
    out.update({key_part(k): canonical(v) for k, v in record["properties"].items()})
    return out


class ServerLog:
    """Wraps an ``EmulatorState``'s write methods (on the instance) until ``close()``."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.writes: list[Write] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        for name in WRAPPED:
            setattr(state, name, self._wrap(name, getattr(state, name)))

    def close(self) -> None:
        for name in WRAPPED:
            if name in vars(self.state):
                delattr(self.state, name)

    @contextmanager
    def teammate(self) -> Iterator[None]:
        previous = getattr(self._local, "teammate", False)
        self._local.teammate = True
        try:
            yield
        finally:
            self._local.teammate = previous

    def as_teammate(self, action: Callable[[Any], object]) -> Callable[[Any], object]:
        def run(state: Any) -> object:
            with self.teammate():
                return action(state)

        return run

    # ---- logging -------------------------------------------------------------------

    def _log(self, record_id: str, part: str, value: str, *, creation: bool = False) -> None:
        with self._lock:
            self.writes.append(
                Write(len(self.writes), record_id, part, value,
                      bool(getattr(self._local, "teammate", False)), creation)
            )

    def _changed(self, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        if before is None:
            return
        old, new = parts_of(before), parts_of(after)
        for part in sorted(old.keys() | new.keys()):
            if old.get(part) != new.get(part):
                self._log(after["id"], part, new.get(part, MISSING))

    def _created(self, record: dict[str, Any]) -> None:
        self._log(record["id"], "exists", EXISTS, creation=True)
        for part, value in parts_of(record).items():
            self._log(record["id"], part, value, creation=True)

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        state = self.state

        def update(record_id: str, value: Any) -> Any:
            with state._lock:
                before = state.get_record(record_id)
                result = method(record_id, value)
                self._changed(before, state.get_record(record_id))
                return result

        def delete_record(record_id: str) -> Any:
            with state._lock:
                before = state.get_record(record_id)
                result = method(record_id)
                if before is not None:
                    self._log(before["id"], "exists", GONE)
                return result

        def bulk_delete(record_ids: Any) -> Any:
            ids = list(record_ids)
            with state._lock:
                live = [r for r in (state.get_record(i) for i in ids) if r is not None]
                result = method(ids)
                for record in {r["id"]: r for r in live}.values():
                    self._log(record["id"], "exists", GONE)
                return result

        def add_records(dataset_id: str, items: Any) -> Any:
            with state._lock:
                created = method(dataset_id, items)
                for record in created:
                    self._created(record)
                return created

        def delete_dataset(ref: str) -> Any:
            with state._lock:
                live = state.list_records(ref)
                result = method(ref)
                for record in live:
                    self._log(record["id"], "exists", GONE)
                return result

        return {
            "update_payload": update,
            "update_properties": update,
            "delete_record": delete_record,
            "bulk_delete": bulk_delete,
            "add_records": add_records,
            "delete_dataset": delete_dataset,
        }[name]

    # ---- questions -----------------------------------------------------------------

    def snapshot(self) -> list[Write]:
        with self._lock:
            return list(self.writes)

    def last_before(self, record_id: str, part: str, pos: int) -> Write | None:
        for write in reversed(self.writes[:pos]):
            if write.record_id == record_id and write.part == part:
                return write
        return None

    def version_of(self, record_id: str, part: str, value: str) -> int:
        """The position of the latest write that gave ``part`` this value (a value that was
        never written, such as a key the record never had: its creation)."""
        creation = -1
        for write in reversed(self.writes):
            if write.record_id != record_id:
                continue
            if write.part == part and write.value == value:
                return write.pos
            if write.part == "exists" and write.value == EXISTS:
                creation = write.pos if creation < 0 else creation
        return creation
