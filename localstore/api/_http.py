"""The request machinery behind ``Client``: the server URL's checks (the key goes over
plain http to a loopback address only), the key kept out of reprs and messages, one
call with retries and its errors, a JSON answer read. See ``localstore.api._client``
for the retry rules."""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import httpx

from localstore.api._decode import (
    NotUnicodeError,
    Reader,
    content_type,
    decode_json,
    error_message,
    one_line,
)
from localstore.api._retry import (
    RETRYABLE_STATUSES,
    AttemptFailed,
    RetryPolicy,
    describe_transport_error,
    parse_retry_after,
)
from localstore.errors import (
    HTTPStatusError,
    InsecureTransportError,
    ProtocolError,
    TransportError,
    UsageError,
    status_error,
)
from localstore.version import __version__

DEFAULT_SERVER_URL = "https://api.mistral.ai"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
API_KEY_ENV = "MISTRAL_API_KEY"
SERVER_URL_ENV = "LOCALSTORE_SERVER_URL"

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


class _Secret:
    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


def _is_loopback(host: str) -> bool:
    name = host.strip("[]").lower().rstrip(".")
    # not "*.localhost": glibc (hosts: files dns) asks DNS for those, which may answer anything
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_server_url(server_url: str) -> httpx.URL:
    if not isinstance(server_url, str) or not server_url.strip():
        raise UsageError("the server URL is empty: expected e.g. https://api.mistral.ai")
    text = server_url.strip()
    try:
        url = httpx.URL(text)
        _ = url.port
    except (httpx.InvalidURL, ValueError, TypeError):
        raise UsageError(
            f"malformed server URL {text!r}: expected e.g. https://api.mistral.ai"
        ) from None
    if url.port is not None and not 0 < url.port < 65536:
        raise UsageError(f"malformed server URL {text!r}: the port must be 1..65535")
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"malformed server URL {text!r}: expected http(s)://host[:port]")
    if url.userinfo:
        raise UsageError("the server URL must not carry credentials; use MISTRAL_API_KEY")
    if url.query or url.fragment:
        raise UsageError(f"the server URL {text!r} must not have a query or fragment")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise InsecureTransportError(
            f"refusing to send the API key over plain http to {url.host}: "
            "use https, or http only to a loopback address (localhost, 127.0.0.1, ::1)"
        )
    return url.copy_with(path=url.path.rstrip("/") or "/")



class HttpClient:
    """One keep-alive connection pool to the API and the key; calls with retries.
    Thread-safe; close it (or use ``with``)."""

    def __init__(
        self,
        server_url: str = DEFAULT_SERVER_URL,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        max_connections: int = 32,
        transport: httpx.BaseTransport | None = None,
        on_request: Callable[[httpx.Request], None] | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key or not key.strip():
            raise UsageError(
                f"{API_KEY_ENV} is not set: export your Mistral API key "
                f"(export {API_KEY_ENV}=...) or pass api_key="
            )
        if key != key.strip() or not key.isprintable() or not key.isascii():
            raise UsageError(
                "the API key holds spaces or control characters: check MISTRAL_API_KEY"
            )
        if not isinstance(max_connections, int) or max_connections < 1:
            raise UsageError(f"max_connections must be >= 1, not {max_connections!r}")
        self._base = _check_server_url(server_url)
        self._secret = _Secret(key)
        self.server_url = str(self._base).rstrip("/")
        self.origin = f"{self._base.scheme}://{self._base.netloc.decode('ascii')}"
        self.retry = retry or RetryPolicy()
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._http = httpx.Client(
            base_url=self._base,
            headers={
                "Authorization": f"Bearer {key}",
                "User-Agent": f"localstore/{__version__}",
                "Accept": "application/json",
            },
            timeout=self._timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
            event_hooks={"request": [on_request]} if on_request else None,
            follow_redirects=False,
            # a proxy is never wanted for a loopback emulator
            trust_env=not _is_loopback(self._base.host),
        )

    @classmethod
    def from_env(cls, server_url: str | None = None, **kw: Any) -> Self:
        """Key from MISTRAL_API_KEY; server from the argument, LOCALSTORE_SERVER_URL
        or the default."""
        url = server_url or os.environ.get(SERVER_URL_ENV) or DEFAULT_SERVER_URL
        return cls(url, os.environ.get(API_KEY_ENV), **kw)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.server_url}>"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the request machinery ---------------------------------------------------

    def _scrub(self, text: str) -> str:
        """``text`` without the key, nor a prefix of it cut short by "..." (``short``,
        ``one_line``) where a server echoed the key into a long value."""
        key = self._secret.value
        if not key:
            return text
        text = text.replace(key, "***")
        for n in range(len(key) - 1, 5, -1):
            if key[:n] + "..." in text:
                text = text.replace(key[:n] + "...", "***...")
        return text

    def _attempt_timeout(self, deadline: float) -> httpx.Timeout:
        """The configured timeouts, shortened so one attempt ends by the deadline."""
        left = max(1.0, deadline - time.monotonic())
        t = self._timeout

        def cap(value: float | None) -> float:
            return left if value is None else min(value, left)

        return httpx.Timeout(
            connect=cap(t.connect), read=cap(t.read), write=cap(t.write), pool=cap(t.pool)
        )

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        idempotent: bool = True,
        creates: str | None = None,
    ) -> httpx.Response:
        """One call with retries; returns a 2xx answer or raises ApiError."""
        content = None
        headers = None
        if body is not None:
            try:
                content = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
            except (TypeError, ValueError) as exc:
                raise UsageError(
                    f"the request body is not JSON: {one_line(str(exc), 120)}"
                ) from None
            headers = {"Content-Type": "application/json"}
        where = f"{method} {path}"
        write = method != "GET"

        def should_retry(exc: BaseException) -> bool:
            if isinstance(exc, AttemptFailed):
                return exc.not_sent if not idempotent else exc.retryable
            if isinstance(exc, HTTPStatusError):
                return exc.status == 429 if not idempotent else exc.status in RETRYABLE_STATUSES
            return False

        deadline = time.monotonic() + self.retry.max_total_seconds
        attempts = 0
        try:
            for attempt in self.retry.retrying(should_retry):
                with attempt:
                    attempts += 1
                    try:
                        response = self._http.request(
                            method,
                            path,
                            params=params,
                            content=content,
                            headers=headers,
                            timeout=self._attempt_timeout(deadline),
                        )
                    except httpx.RequestError as exc:
                        # transport trouble, or a body that did not arrive intact
                        raise AttemptFailed(exc) from None
                    if response.status_code >= 400:
                        message, code = error_message(response)
                        raise status_error(
                            response.status_code,
                            self._scrub(message),
                            None if code is None else self._scrub(code),
                            method=method,
                            path=path,
                            retry_after=parse_retry_after(response.headers.get("retry-after")),
                            write=write,
                        )
        except AttemptFailed as failed:
            raise self._transport_error(failed, where, attempts, creates, write=write) from None
        if not 200 <= response.status_code < 300:
            where_to = response.headers.get("location", "")
            raise ProtocolError(
                self._scrub(
                    f"unexpected answer {response.status_code} {response.reason_phrase} to {where}"
                    + (
                        f" (redirect to {one_line(where_to, 100)}): check the server URL"
                        if where_to
                        else ""
                    )
                ),
                outcome_unknown=write,
            )
        return response

    def _transport_error(
        self, failed: AttemptFailed, where: str, attempts: int, creates: str | None, *, write: bool
    ) -> TransportError:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        reason = describe_transport_error(failed.error)
        if failed.not_sent:
            text = f"cannot reach {self.origin} ({reason}) after {tries}"
        else:
            text = f"{where} on {self.origin} failed ({reason}) after {tries}"
            if creates:
                text += f"; the {creates} may have been created: check before sending it again"
        return TransportError(self._scrub(text), outcome_unknown=write and not failed.not_sent)

    def _json(self, method: str, path: str, **kw: Any) -> tuple[Any, Reader, httpx.Response]:
        response = self._send(method, path, **kw)
        where = f"{method} {path}"
        try:
            body = decode_json(response)
        except NotUnicodeError as exc:
            raise ProtocolError(
                f"malformed answer to {where}: {exc}", outcome_unknown=method != "GET"
            ) from None
        except ValueError:
            kind = self._scrub(content_type(response))
            raise ProtocolError(
                f"server answered {response.status_code} to {where} with a non-JSON body ({kind})",
                outcome_unknown=method != "GET",
            ) from None
        return body, Reader(where), response

    def _parse(
        self, method: str, path: str, parse: Callable[[Any, Reader], Any], **kw: Any
    ) -> Any:
        body, reader, _ = self._json(method, path, **kw)
        try:
            return parse(body, reader)
        except ProtocolError as exc:
            raise self._protocol(exc, write=method != "GET") from None

    def _protocol(self, exc: ProtocolError, *, write: bool = False) -> ProtocolError:
        """The same error, scrubbed of the key, tagged for outcome_unknown."""
        return ProtocolError(self._scrub(str(exc)), outcome_unknown=write)
