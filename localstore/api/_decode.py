"""The API's answers as typed values: the record and dataset models, and the reader
that turns a JSON answer into them or into a one-line ProtocolError naming the field."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import orjson

from localstore.api._models import Dataset, Record
from localstore.core.ids import parse_uuid
from localstore.core.timestamps import fast_ts, normalize_ts
from localstore.errors import ProtocolError, UsageError

# -- reading answers -----------------------------------------------------------


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def record_fast(value: Any, dataset_id: str | None = None) -> Record | None:
    """A live record with lowercase UUIDs and UTC timestamps in any of the server's
    forms (``fast_ts``: ms or µs, ``Z`` or ``+00:00``) passes with one check per field
    (``dataset_id``: a UUID already checked, which the record's may equal); anything
    else takes the careful path, which normalizes it or names what is wrong."""
    if type(value) is not dict:
        return None
    get = value.get
    rid, ds, created, updated = get("id"), get("dataset_id"), get("created_at"), get("updated_at")
    source, payload, properties = get("source"), get("payload"), get("properties")
    if (
        type(rid) is str and _UUID.fullmatch(rid)
        and type(ds) is str and (ds == dataset_id or _UUID.fullmatch(ds))
        and type(created) is str and type(updated) is str
        # a record never changed has updated_at = created_at: one timestamp to read
        and (updated_ts := fast_ts(updated)) is not None
        and (created_ts := updated_ts if created == updated else fast_ts(created)) is not None
        and "deleted_at" in value and get("deleted_at") is None
        and type(source) is str and type(payload) is dict and type(properties) is dict
    ):
        return Record(rid, ds, created_ts, updated_ts, None, source, payload, properties)
    return None



class Reader:
    """Reads one JSON answer; every ProtocolError names the endpoint and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, problem: str) -> ProtocolError:
        return ProtocolError(f"malformed answer to {self.where}: {field} {problem}")

    def get(self, obj: dict[str, Any], key: str, field: str) -> Any:
        if key not in obj:
            raise self.fail(f"{field}.{key}" if field else key, "is missing")
        return obj[key]

    def obj(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field or "the body", f"is {short(value, 40)}, expected an object")
        return value

    def string(self, obj: dict[str, Any], key: str, field: str) -> str:
        value = self.get(obj, key, field)
        if not isinstance(value, str):
            raise self.fail(_join(field, key), f"is {short(value, 40)}, expected a string")
        return value

    def opt_string(self, obj: dict[str, Any], key: str, field: str) -> str | None:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(_join(field, key), f"is {short(value, 40)}, expected a string")
        return value

    def uuid(self, obj: dict[str, Any], key: str, field: str) -> str:
        value = self.string(obj, key, field)
        try:
            return parse_uuid(value)
        except UsageError:
            raise self.fail(_join(field, key), f"is {short(value, 40)}, expected a UUID") from None

    def integer(self, obj: dict[str, Any], key: str, field: str) -> int:
        value = self.get(obj, key, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(_join(field, key), f"is {short(value, 40)}, expected a count >= 0")
        return value

    def ts(self, obj: dict[str, Any], key: str, field: str) -> str:
        value = self.get(obj, key, field)
        try:
            return normalize_ts(value, field=_join(field, key))
        except ProtocolError as exc:
            raise ProtocolError(f"malformed answer to {self.where}: {exc}") from None
        except (ValueError, OverflowError):
            raise self.fail(_join(field, key), f"is {short(value, 40)}, out of range") from None

    def opt_ts(self, obj: dict[str, Any], key: str, field: str) -> str | None:
        return None if self.get(obj, key, field) is None else self.ts(obj, key, field)

    def mapping(self, obj: dict[str, Any], key: str, field: str) -> dict[str, Any]:
        value = self.get(obj, key, field)
        if not isinstance(value, dict):
            raise self.fail(_join(field, key), f"is {short(value, 40)}, expected an object")
        return value

    def record(self, value: Any, field: str) -> Record:
        return record_fast(value) or self.careful_record(value, field)

    def careful_record(self, value: Any, field: str) -> Record:
        """A record off the fast path: normalized, or a ProtocolError naming the field."""
        obj = self.obj(value, field)
        return Record(
            id=self.uuid(obj, "id", field),
            dataset_id=self.uuid(obj, "dataset_id", field),
            created_at=self.ts(obj, "created_at", field),
            updated_at=self.ts(obj, "updated_at", field),
            deleted_at=self.opt_ts(obj, "deleted_at", field),
            source=self.string(obj, "source", field),
            payload=self.mapping(obj, "payload", field),
            properties=self.mapping(obj, "properties", field),
        )

    def dataset(self, value: Any, field: str) -> Dataset:
        obj = self.obj(value, field)
        return Dataset(
            id=self.uuid(obj, "id", field),
            name=self.string(obj, "name", field),
            description=self.string(obj, "description", field),
            created_at=self.ts(obj, "created_at", field),
            updated_at=self.ts(obj, "updated_at", field),
            deleted_at=self.opt_ts(obj, "deleted_at", field),
            slug=self.opt_string(obj, "slug", field),
            owner_id=self.string(obj, "owner_id", field),
            workspace_id=self.string(obj, "workspace_id", field),
        )

    def task(self, value: Any, field: str) -> dict[str, Any]:
        obj = dict(self.obj(value, field))
        obj["id"] = self.uuid(obj, "id", field)
        self.string(obj, "status", field)
        for key in ("created_at", "updated_at"):
            obj[key] = self.ts(obj, key, field)
        obj["deleted_at"] = self.opt_ts(obj, "deleted_at", field)
        return obj

    def paginated(self, body: Any, key: str) -> tuple[dict[str, Any], list[Any], int]:
        envelope = self.mapping(self.obj(body, ""), key, "")
        count = self.integer(envelope, "count", key)
        results = envelope.get("results", [])
        if not isinstance(results, list):
            raise self.fail(f"{key}.results", f"is {short(results, 40)}, expected a list")
        for link in ("next", "previous"):
            self.opt_string(envelope, link, key)
        return envelope, results, count


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(response: httpx.Response) -> Any:
    """The body as JSON; ValueError when it is not (NaN/Infinity included). orjson parses
    pages faster; the standard library takes what orjson refuses but JSON allows
    (integers past 64 bits)."""
    content = response.content
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        pass
    try:
        value = json.loads(content, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    try:  # orjson refuses lone surrogates ("\ud800"): no UTF-8 store can hold them
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise NotUnicodeError("a string holds a lone surrogate escape, which is not Unicode text") from None
    return value


class NotUnicodeError(ValueError):
    """Valid JSON syntax, but text that cannot be stored as UTF-8."""


def content_type(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    return kind or "no content type"


def error_message(response: httpx.Response) -> tuple[str, str | None]:
    """(message, error_code) from an error answer, whatever its shape."""
    reason = response.reason_phrase or "error"
    if not response.content.strip():
        return f"{reason} (empty body)", None
    try:
        body = decode_json(response)
    except ValueError:
        return f"{reason}, with a non-JSON body ({content_type(response)})", None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        message = detail.get("message")
        code = detail.get("error_code")
        return (
            one_line(message) if isinstance(message, str) and message.strip() else reason,
            code if isinstance(code, str) else None,
        )
    if isinstance(detail, str) and detail.strip():
        return one_line(detail), None
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict) and isinstance(item.get("msg"), str):
                loc = item.get("loc")
                where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
                parts.append(f"{where}: {item['msg']}" if where else item["msg"])
            else:
                parts.append(short(item, 60))
        return one_line("; ".join(parts)), None
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"].strip():
        return one_line(body["message"]), None
    return reason, None
