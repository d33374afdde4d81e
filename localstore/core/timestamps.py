"""Timestamps: every timestamp the store keeps is ISO 8601 in UTC with microseconds,
``2026-11-25T18:51:57.123456Z``, so equal instants compare equal as strings.

The server may send any valid form of a UTC instant — ``…:57.123Z`` (its documented
form), ``…:57.123456Z``, ``…:57.123456+00:00`` — and each is read by the same fast
path: one regular expression, then padding the fraction to six digits. Only other
offsets (and 29 February, whose year must be checked) take the full parser.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from localstore.errors import ProtocolError

# A UTC instant with an optional fraction: the date is checked by the pattern itself
# (month lengths; 29 February falls through to the parser, which knows leap years).
# Digits past the sixth are truncated, as datetime.fromisoformat does.
_UTC_FORMS = re.compile(
    r"((?!0000)\d{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d)(?:\.(\d{1,6})\d*)?(?:Z|z|\+00:00)",
    re.ASCII,  # \d is 0-9 only, not any Unicode digit
)


def fast_ts(value: str) -> str | None:
    """The canonical form of a UTC timestamp in any of the server's forms, or None when
    it needs the full parser (another offset, 29 February) or is not one at all."""
    match = _UTC_FORMS.fullmatch(value)
    if match is None:
        return None
    # the server's three forms by their length: a slice, no group extraction
    size = len(value)
    if size == 27 and value[26] == "Z":  # ….974123Z, already canonical
        return value
    if size == 24 and value[23] == "Z":  # ….974Z
        return value[:23] + "000Z"
    if size == 32 and value[26] == "+":  # ….974123+00:00
        return value[:26] + "Z"
    head, fraction = match.groups()
    if fraction is None:
        return head + ".000000Z"
    return f"{head}.{fraction:0<6}Z"


def format_ts(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: timestamps must be timezone-aware")
    # isoformat, not strftime: strftime's %Y drops the leading zeros of years < 1000
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


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
    if isinstance(value, str):
        fast = fast_ts(value)
        if fast is not None:
            return fast
    moment = parse_ts(value, field=field)
    try:
        return format_ts(moment)
    except (ValueError, OverflowError):
        raise ProtocolError(f"server sent {field}={value!r}, out of range") from None


def ago(stamp: str, now: datetime | None = None) -> str:
    """How long ago ``stamp`` was, as a person says it: "just now", "42 s ago", "3 min
    ago", "5 h ago", "3 days ago" (a stamp in the future, from a skewed clock: "just now")."""
    seconds = ((now or datetime.now(UTC)) - parse_ts(stamp)).total_seconds()
    if seconds < 5:
        return "just now"
    for unit, size, until in (("s", 1, 60), ("min", 60, 3600), ("h", 3600, 2 * 86400)):
        if seconds < until:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds // 86400)} days ago"
