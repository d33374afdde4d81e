"""Bounded polling: wait until a condition holds. The timeout is not an assertion on time,
only what keeps a broken run from hanging."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.02) -> T:
    """Poll ``condition`` until it is truthy and return its value; fail the test once
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
    return value
