"""The exception hierarchy. Every error meant for a person has a one-line ``str()``
that names the problem and, where there is one, the fix.

    LocalstoreError
    ├── UsageError            bad input from the user: ids, files, options, environment
    │   ├── NotFoundLocally   an id the store does not know
    │   └── InsecureTransportError
    ├── StoreError            the SQLite file: too new, not a store, locked
    │   └── SyncInProgressError
    └── ApiError              anything that went wrong talking to the API
        ├── TransportError    connection refused/reset, timeouts — after retries
        ├── ProtocolError     non-JSON or wrong-shaped answers, broken pagination
        └── HTTPStatusError   an error status with the server's message
            ├── AuthenticationError  401/403
            ├── NotFoundError        404
            ├── RequestRejectedError 400/409/422: the server refused this request
            ├── RateLimitedError     429
            └── ServerError          408/5xx

    KeyboardInterrupt
    └── Interrupted           Ctrl-C stopped a long command: what it had done
"""

from __future__ import annotations

from typing import Any


class LocalstoreError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(LocalstoreError):
    """The user asked for something invalid; nothing was changed."""


class NotFoundLocally(UsageError):
    """An id that the local store does not hold."""


class InsecureTransportError(UsageError):
    """Refusing to send the API key over plain http to a non-loopback host."""


class StoreError(LocalstoreError):
    """The store file cannot be used as it is."""


class SyncInProgressError(StoreError):
    """Another sync holds this store's lock."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a long command (pull, sync, judge). ``done`` is its report of what
    it had done by then, for the CLI to print before it exits 130; what was being sent
    was abandoned, its outcome unknown (the next sync settles it)."""

    def __init__(self, done: Any) -> None:
        super().__init__("interrupted")
        self.done = done


class ApiError(LocalstoreError):
    """Base class for failures talking to the API.

    ``outcome_unknown`` is True when a failed write (POST/PUT/PATCH/DELETE) may
    nevertheless have been applied by the server: a timeout or reset after the request
    was sent, a 408 or 5xx answer, or a success answer that could not be read. The
    caller must reconcile (list or GET) before sending it again."""

    outcome_unknown: bool = False

    def __init__(self, message: str = "", *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class TransportError(ApiError):
    """The request did not get a usable answer: refused, reset, timed out."""


class ProtocolError(ApiError):
    """The server answered, but not in the shape the API contract promises."""


class HTTPStatusError(ApiError):
    """An error status. ``message`` and ``error_code`` come from the server's
    ObservabilityError body when it sent one."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        *,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        self.status = status
        self.message = message
        self.error_code = error_code
        self.method = method
        self.path = path
        self.retry_after = retry_after
        where = f" on {method} {path}" if method else ""
        code = f" [{error_code}]" if error_code else ""
        super().__init__(f"server answered {status}{where}: {message}{code}", outcome_unknown=outcome_unknown)


class AuthenticationError(HTTPStatusError):
    def __str__(self) -> str:
        return (
            f"server refused the API key ({self.status}: {self.message}); "
            "set MISTRAL_API_KEY to a valid key"
        )


class NotFoundError(HTTPStatusError):
    pass


class RequestRejectedError(HTTPStatusError):
    pass


class RateLimitedError(HTTPStatusError):
    pass


class ServerError(HTTPStatusError):
    pass


def status_error(
    status: int,
    message: str,
    error_code: str | None = None,
    *,
    method: str = "",
    path: str = "",
    retry_after: float | None = None,
    write: bool = False,
) -> HTTPStatusError:
    """Build the most specific HTTPStatusError subclass for ``status``; for a ``write``,
    a 408 or 5xx leaves its outcome unknown."""
    cls: type[HTTPStatusError]
    if status in (401, 403):
        cls = AuthenticationError
    elif status == 404:
        cls = NotFoundError
    elif status == 429:
        cls = RateLimitedError
    elif status == 408 or status >= 500:
        cls = ServerError
    elif 400 <= status < 500:
        cls = RequestRejectedError
    else:
        cls = HTTPStatusError
    return cls(
        status,
        message,
        error_code,
        method=method,
        path=path,
        retry_after=retry_after,
        outcome_unknown=write and (status == 408 or status >= 500),
    )


def outcome_unknown(exc: BaseException) -> bool:
    """Whether ``exc`` is an API failure whose write may have been applied anyway (see
    ``ApiError.outcome_unknown``)."""
    return isinstance(exc, ApiError) and exc.outcome_unknown
