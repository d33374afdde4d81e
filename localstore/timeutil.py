"""Timestamps: every timestamp the store keeps is ISO 8601 in UTC with microseconds,
``2026-11-25T18:51:57.123456Z``, so equal instants compare equal as strings."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from .errors import ProtocolError

# Already canonical: returned as it is (the common case, and a hot path when pulling).
_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def format_ts(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_ts() -> str:
    return format_ts(datetime.now(UTC))


def parse_ts(value: object, *, field: str = "timestamp") -> datetime:
    """Parse a server timestamp; a missing zone or an unparsable value is a ProtocolError."""
    if not isinstance(value, str):
        raise ProtocolError(f"server sent {field}={value!r}, expected an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except (ValueError, OverflowError):
        raise ProtocolError(f"server sent {field}={value!r}, not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise ProtocolError(f"server sent {field}={value!r} without a time zone")
    return moment


def normalize_ts(value: object, *, field: str = "timestamp") -> str:
    if isinstance(value, str) and _CANONICAL.fullmatch(value):
        return value
    moment = parse_ts(value, field=field)
    try:
        return format_ts(moment)
    except (ValueError, OverflowError):
        raise ProtocolError(f"server sent {field}={value!r}, out of range") from None
