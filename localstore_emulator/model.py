"""The emulator's pure parts: record rows, timestamps, and the API's acceptance rules
(payload format, size limits, judging). No state and no I/O."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

SOURCES = ("EXPLORER", "UPLOADED_FILE", "DIRECT_INPUT", "PLAYGROUND")
MAX_VALUE_BYTES = 1024 * 1024

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class EmulatorError(Exception):
    """A refusal the API would send: an HTTP status, a message and an ObservabilityErrorCode."""

    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_second_prefix: tuple[int, str] = (-1, "")


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def format_us(micros: int) -> str:
    """``2026-11-25T18:51:57.123456Z``; the part up to the second is cached."""
    global _second_prefix
    second, fraction = divmod(micros, 1_000_000)
    cached_second, prefix = _second_prefix
    if cached_second != second:
        prefix = (_EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")
        _second_prefix = (second, prefix)
    return f"{prefix}.{fraction:06d}Z"


def parse_us(stamp: str) -> int:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (moment - _EPOCH) // timedelta(microseconds=1)


def canonical_uuid(value: object, what: str) -> str:
    """Lowercase hyphenated form of a UUID, or 422 VALIDATION_ERROR."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise EmulatorError(
            422, f"{what} {value!r} is not a valid UUID", "VALIDATION_ERROR"
        ) from None


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60].strip("-") or "dataset"


def _encode_json_object(value: object, what: str) -> str:
    if not isinstance(value, dict):
        raise EmulatorError(
            422, f"{what} must be a JSON object, got {type(value).__name__}", "VALIDATION_ERROR"
        )
    try:
        text = dumps(value)
    except (TypeError, ValueError) as exc:
        raise EmulatorError(422, f"{what} is not serializable as JSON: {exc}", "VALIDATION_ERROR") from None
    if len(text) * 4 > MAX_VALUE_BYTES and len(text.encode()) > MAX_VALUE_BYTES:
        raise EmulatorError(
            422,
            f"{what} is {len(text.encode())} bytes serialized; the limit is {MAX_VALUE_BYTES} (1 MiB)",
            "VALIDATION_ERROR",
        )
    return text


def encode_payload(payload: object) -> str:
    """Serialize a payload, refusing what the emulated server refuses.

    A ``messages`` key, when present, must hold a list of objects each with a
    string ``role`` (422 DATASET_RECORD_FORMAT_ERROR); this gives clients a
    realistic "the server rejects this edit" path.
    """
    if isinstance(payload, dict) and "messages" in payload:
        messages = payload["messages"]
        if not isinstance(messages, list):
            raise EmulatorError(
                422,
                f"payload.messages must be a list of message objects, got {type(messages).__name__}",
                "DATASET_RECORD_FORMAT_ERROR",
            )
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise EmulatorError(
                    422,
                    f"payload.messages[{index}] must be an object with a string 'role'",
                    "DATASET_RECORD_FORMAT_ERROR",
                )
    return _encode_json_object(payload, "payload")


def encode_properties(properties: object) -> str:
    return _encode_json_object(properties, "properties")


class Record:
    """A record row; ``payload`` and ``properties`` hold JSON text, the stamps the
    canonical µs form (``render`` gives the API's form); ``seq`` orders the listing."""

    __slots__ = (
        "created_at",
        "dataset_id",
        "deleted_at",
        "id",
        "payload",
        "properties",
        "seq",
        "source",
        "updated_at",
    )

    def __init__(
        self,
        id: str,
        dataset_id: str,
        created_at: str,
        updated_at: str,
        deleted_at: str | None,
        source: str,
        payload: str,
        properties: str,
        seq: int = 0,
    ) -> None:
        self.seq = seq
        self.id = id
        self.dataset_id = dataset_id
        self.created_at = created_at
        self.updated_at = updated_at
        self.deleted_at = deleted_at
        self.source = source
        self.payload = payload
        self.properties = properties

    def to_json(self, render: Callable[[str], str]) -> str:
        deleted = "null" if self.deleted_at is None else f'"{render(self.deleted_at)}"'
        return (
            f'{{"id":"{self.id}","created_at":"{render(self.created_at)}",'
            f'"updated_at":"{render(self.updated_at)}","deleted_at":{deleted},'
            f'"dataset_id":"{self.dataset_id}","payload":{self.payload},'
            f'"properties":{self.properties},"source":"{self.source}"}}'
        )

    def to_dict(self, render: Callable[[str], str]) -> dict[str, Any]:
        return json.loads(self.to_json(render))

    def row(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.dataset_id,
            self.created_at,
            self.updated_at,
            self.deleted_at,
            self.source,
            self.payload,
            self.properties,
        )


def judge_answer(record_id: str, payload_json: str, judge_definition: dict[str, Any]) -> dict[str, Any]:
    """A deterministic JudgeOutput for (record id, judge name); no model is called."""
    messages = json.loads(payload_json).get("messages")
    name = judge_definition.get("name", "")
    output = judge_definition.get("output") or {}
    digest = hashlib.sha256(f"{record_id}\n{name}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    turns = len(messages) if isinstance(messages, list) else 0
    if output.get("type", "CLASSIFICATION") == "CLASSIFICATION":
        options = output.get("options") or []
        if not options:
            raise EmulatorError(422, "a CLASSIFICATION judge needs at least one option", "VALIDATION_ERROR")
        answer: str | float = options[int(fraction * len(options))]["value"]
    else:
        low, high = float(output.get("min", 0)), float(output.get("max", 1))
        if low > high:
            raise EmulatorError(422, f"REGRESSION min {low} exceeds max {high}", "VALIDATION_ERROR")
        answer = min(high, max(low, round(low + fraction * (high - low), 3)))
    return {
        "answer": answer,
        "analysis": f"Judge {name!r} answered {answer!r} after reading {turns} messages.",
    }
