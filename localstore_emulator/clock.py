"""The emulator's clock: microseconds inside, one of three ISO 8601 forms outside.

Every stamp the state keeps is the canonical ``2025-10-07T20:56:01.974123Z`` (27
characters); what a client sees is ``Clock.render`` of it:

=========  ==================================  ==========================================
format     rendered                            note
=========  ==================================  ==========================================
``ms``     ``2025-10-07T20:56:01.974Z``        the default: the API reference's example
``us``     ``2025-10-07T20:56:01.974123Z``
``offset`` ``2025-10-07T20:56:01.974123+00:00`` Python's ``isoformat()``: no fraction
                                               when it is zero (``…:01+00:00``)
=========  ==================================  ==========================================

In the ``ms`` form two writes within one millisecond share a rendered ``updated_at``,
as they do on the real API. ``resolution_ms`` makes the clock itself coarse (every
write within one window shares its stamp, whatever the form), and
``freeze_updated_at`` makes PUTs leave ``updated_at`` alone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Literal, get_args

from localstore_emulator.model import format_us, parse_us

TimestampFormat = Literal["ms", "us", "offset"]
TIMESTAMP_FORMATS: tuple[str, ...] = get_args(TimestampFormat)

_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _as_us(stamp: str) -> str:
    return stamp


def _as_ms(stamp: str) -> str:
    return stamp[:23] + "Z"


def _as_offset(stamp: str) -> str:
    if stamp.endswith(".000000Z"):  # as isoformat() does: no fraction when it is zero
        return stamp[:19] + "+00:00"
    return stamp[:26] + "+00:00"


_RENDERERS: dict[str, Callable[[str], str]] = {"us": _as_us, "ms": _as_ms, "offset": _as_offset}


def canonical_us(stamp: str) -> str:
    """Any ISO 8601 form of an instant (as a state file may hold it) in the internal form."""
    return stamp if _CANONICAL.fullmatch(stamp) else format_us(parse_us(stamp))


def check_format(value: str) -> TimestampFormat:
    if value not in TIMESTAMP_FORMATS:
        raise ValueError(f"timestamp_format must be one of {TIMESTAMP_FORMATS}, got {value!r}")
    return value  # type: ignore[return-value]


class Clock:
    """Not thread-safe by itself: the state calls it under its lock."""

    def __init__(self, timestamp_format: TimestampFormat = "ms", resolution_ms: int = 0) -> None:
        self.last_us = 0
        self.freeze_updated_at = False
        self.resolution_ms = 0
        self.format: TimestampFormat = "ms"
        self.render: Callable[[str], str] = _as_ms
        self.configure(timestamp_format=timestamp_format, resolution_ms=resolution_ms)

    def configure(
        self,
        *,
        timestamp_format: TimestampFormat | None = None,
        resolution_ms: int | None = None,
        freeze_updated_at: bool | None = None,
    ) -> None:
        """Change what is given; None keeps a setting."""
        if timestamp_format is not None:
            self.format = check_format(timestamp_format)
            self.render = _RENDERERS[self.format]
        if resolution_ms is not None:
            if resolution_ms < 0:
                raise ValueError("clock_resolution_ms must be >= 0")
            self.resolution_ms = int(resolution_ms)
        if freeze_updated_at is not None:
            self.freeze_updated_at = bool(freeze_updated_at)

    def tick(self) -> str:
        """The stamp of a write: strictly increasing; with ``resolution_ms``, the start of
        the current window, as a server keeping coarse stamps would write (the first
        such stamp may be up to one window before the last fine one)."""
        now = time.time_ns() // 1000
        if self.resolution_ms:
            self.last_us = max(now, self.last_us)
            return format_us(self.last_us - self.last_us % (self.resolution_ms * 1000))
        self.last_us = max(now, self.last_us + 1)
        return format_us(self.last_us)

    def observe(self, stamp: str) -> None:
        """A stored stamp (canonical form): the clock never goes back before it."""
        self.last_us = max(self.last_us, parse_us(stamp))
