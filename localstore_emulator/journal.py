"""What the emulator applied, write by write, and what the client was answered.

The ``Gate`` marks each API request it lets through (``CURRENT_REQUEST``); every
change the state applies while that request runs is journaled with it, and the
request's ``answer`` is filled in once the client has been sent one — or not
(``"dropped"``). A test then tells "applied, answer lost" (a write whose request
was answered 5xx or dropped) from "never applied" (no write at all). Changes made
directly on the state (a test playing a teammate, seeding) are not journaled.
"""

from __future__ import annotations

import threading
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

WriteOp = Literal[
    "create_dataset",
    "update_dataset",
    "delete_dataset",
    "create_record",
    "update_payload",
    "update_properties",
    "delete_record",
]
Answer = int | Literal["dropped"] | None
JOURNAL_SIZE = 100_000


@dataclass(eq=False)
class RequestInfo:
    """One API request as the Gate saw it; ``answer`` is the status the client was
    sent, ``"dropped"`` when the connection was closed instead, None until then."""

    number: int
    method: str
    path: str
    template: str
    answer: Answer = None


CURRENT_REQUEST: ContextVar[RequestInfo | None] = ContextVar("emulator_request", default=None)


@dataclass(frozen=True, eq=False)
class AppliedWrite:
    """One change applied by the server. ``at`` is the rendered stamp of the change
    (``updated_at`` after it, or ``deleted_at``)."""

    seq: int
    op: WriteOp
    record_id: str | None
    dataset_id: str | None
    at: str
    request: RequestInfo

    @property
    def answer(self) -> Answer:
        return self.request.answer

    @property
    def acknowledged(self) -> bool:
        """True when the client was told it succeeded (a 2xx answer)."""
        return isinstance(self.answer, int) and 200 <= self.answer < 300

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "op": self.op,
            "record_id": self.record_id,
            "dataset_id": self.dataset_id,
            "at": self.at,
            "request": self.request.number,
            "method": self.request.method,
            "path": self.request.path,
            "answer": self.request.answer,
            "acknowledged": self.acknowledged,
        }


class Journal:
    """The last ``JOURNAL_SIZE`` applied writes, oldest first; thread-safe."""

    def __init__(self, size: int = JOURNAL_SIZE) -> None:
        self._lock = threading.Lock()
        self._writes: deque[AppliedWrite] = deque(maxlen=size)
        self._seq = 0

    def log(self, op: WriteOp, record_id: str | None, dataset_id: str | None, at: str) -> None:
        request = CURRENT_REQUEST.get()
        if request is None:
            return
        with self._lock:
            self._seq += 1
            self._writes.append(AppliedWrite(self._seq, op, record_id, dataset_id, at, request))

    def writes(
        self,
        *,
        record_id: str | None = None,
        dataset_id: str | None = None,
        op: WriteOp | None = None,
        after: int = 0,
    ) -> list[AppliedWrite]:
        """The journaled writes matching every filter given, with ``seq`` > ``after``."""
        with self._lock:
            return [
                w
                for w in self._writes
                if w.seq > after
                and (record_id is None or w.record_id == record_id)
                and (dataset_id is None or w.dataset_id == dataset_id)
                and (op is None or w.op == op)
            ]

    def clear(self) -> None:
        with self._lock:
            self._writes.clear()
