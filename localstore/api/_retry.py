"""When and how long to retry an API call: exponential backoff with jitter, the
server's ``Retry-After`` honoured, bounded in attempts and in total time.

The loop itself is tenacity's; this module only decides the policy.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import tenacity

# statuses worth another try for a request that may safely be repeated
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the client tries before it gives up.

    ``attempts`` counts the first try. Between tries the client waits
    ``base_delay * 2**(n-1)`` seconds (at most ``max_delay``), of which the
    fraction ``jitter`` is random; an answer with ``Retry-After`` is waited for
    exactly instead, up to ``3 * max_delay``. No retry starts once the time
    since the first try plus the coming wait would reach ``max_total_seconds``.
    ``sleep`` is what waits (tests inject a fake one).
    """

    attempts: int = 6
    max_total_seconds: float = 60.0
    base_delay: float = 0.2
    max_delay: float = 10.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be an int >= 1, not {self.attempts!r}")
        for name in ("max_total_seconds", "base_delay", "max_delay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter!r}")

    @classmethod
    def never(cls) -> RetryPolicy:
        """One attempt, no retry."""
        return cls(attempts=1)

    @property
    def retry_after_cap(self) -> float:
        return self.max_delay * 3

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), without Retry-After."""
        delay = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempt - 1))
        return delay * (1.0 - self.jitter * random.random())

    def delay_after(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(0.0, retry_after), self.retry_after_cap)
        return self.backoff(attempt)

    def retrying(self, should_retry: Callable[[BaseException], bool]) -> tenacity.Retrying:
        """A fresh tenacity controller for one call (they keep per-call state)."""
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(should_retry),
            stop=tenacity.stop_any(tenacity.stop_after_attempt(self.attempts), _OutOfTime(self)),
            wait=self._wait,
            sleep=self.sleep,
            reraise=True,
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        if not isinstance(retry_after, (int, float)):
            retry_after = None
        return self.delay_after(state.attempt_number, retry_after)

    def out_of_time(self, state: tenacity.RetryCallState) -> bool:
        upcoming = getattr(state, "upcoming_sleep", 0.0) or 0.0
        return (state.seconds_since_start or 0.0) + upcoming >= self.max_total_seconds


class _OutOfTime(tenacity.stop.stop_base):
    """Stop when the next sleep would pass the policy's total time budget."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.policy.out_of_time(retry_state)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date);
    None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


class AttemptFailed(Exception):
    """One attempt got no usable answer. Internal to the client, which turns it
    into a one-line TransportError once the retries are over."""

    def __init__(self, error: httpx.RequestError) -> None:
        super().__init__(type(error).__name__)
        self.error = error
        # certainly never reached the server: safe to repeat even a non-idempotent request
        self.not_sent = isinstance(
            error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
        )
        # worth another try for an idempotent request; the rest (bad URL scheme,
        # proxy trouble, a local protocol bug) would fail the same way again
        self.retryable = isinstance(
            error,
            (
                httpx.TimeoutException,
                httpx.NetworkError,
                httpx.RemoteProtocolError,
                httpx.DecodingError,
            ),
        )


def describe_transport_error(error: httpx.RequestError) -> str:
    """A few words for a person: "connection refused", "read timeout"..."""
    text = str(error).lower()
    if isinstance(error, httpx.ConnectTimeout):
        return "connect timeout"
    if isinstance(error, httpx.PoolTimeout):
        return "no free connection in the pool"
    if isinstance(error, httpx.ReadTimeout):
        return "read timeout"
    if isinstance(error, httpx.WriteTimeout):
        return "write timeout"
    if isinstance(error, httpx.DecodingError):
        return "the answer's body could not be decoded"
    if "refused" in text:
        return "connection refused"
    if any(s in text for s in ("name or service", "nodename", "getaddrinfo", "name resolution")):
        return "host name does not resolve"
    if "reset" in text:
        return "connection reset"
    if "unreachable" in text:
        return "network unreachable"
    detail = " ".join(str(error).split())[:100]
    if isinstance(error, httpx.RemoteProtocolError):
        return f"broken answer: {detail or 'protocol error'}"
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__
