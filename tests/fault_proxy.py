"""A loopback HTTP/1.1 proxy that injects faults between a client and the emulator.

    with FaultProxy(emulator.url, rate=0.2, seed=7) as proxy:
        client = Client(proxy.url, key, timeout=httpx.Timeout(1.0, connect=1.0))
        ...
        proxy.stats().faults  # {"503": 12, "reset_after": 9, ...}

Each request read from a client connection (keep-alive: any number per connection;
the head is parsed, the body read by Content-Length or chunked framing) either goes
through untouched or meets one fault, drawn with ``rate`` among ``kinds``:

=================  ==========================================  ===================
kind               what the client sees                        did the server act?
=================  ==========================================  ===================
``429``            429 with ``Retry-After``, not forwarded     no
``500``/``502``    that status, not forwarded                  no
``503``            503 with ``Retry-After``, not forwarded     no
``reset_before``   TCP RST (SO_LINGER 0) instead of an answer  no
``reset_after``    forwarded, answer dropped, TCP RST          **yes**, unheard
``truncate``       forwarded; the answer's body (or, for an     **yes**
                   empty body, its head) cut in half, then a
                   close: Content-Length promised more
``stall_before``   nothing, until the client gives up          no
``stall_after``    forwarded, then nothing until the client    **yes**, unheard
                   gives up (a read timeout)
=================  ==========================================  ===================

The draw is seeded and made per request from (seed, method, target, body, how many
times that same request was seen before), with ids folded out of target and body, so
which requests fail depends neither on the order in which concurrent requests reach
the proxy nor on the ids of a freshly seeded dataset. ``match`` limits faults to
some requests (e.g. only the POSTs that create records). Counters (requests by route,
faults by kind) are thread-safe snapshots via ``stats()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

STATUS_KINDS = ("429", "500", "502", "503")
ALL_KINDS = (
    *STATUS_KINDS,
    "reset_before",
    "reset_after",
    "truncate",
    "stall_before",
    "stall_after",
)
# faults after which the server has applied the request although the client never
# got (or could not read) the answer: the ambiguous case for a non-idempotent write
FORWARDED_KINDS = frozenset({"reset_after", "truncate", "stall_after"})

_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID_BYTES = re.compile(_UUID.pattern.encode())
_HEAD_LIMIT = 1 << 20
UPSTREAM_IDLE_SECONDS = 10.0  # reopen an upstream connection idle longer than this

Match = Callable[[str, str], bool]  # (method, path) -> may this request get a fault?


def route_of(method: str, path: str) -> str:
    """``PUT /v1/observability/dataset-records/{id}/properties``: ids folded, no query."""
    return f"{method} {_UUID.sub('{id}', path.split('?', 1)[0])}"


def creates_only(method: str, path: str) -> bool:
    """A ``match`` for the POSTs that create records (not bulk-delete, not imports)."""
    return method == "POST" and path.split("?", 1)[0].endswith("/records")


def writes_only(method: str, path: str) -> bool:
    return method != "GET"


@dataclass(frozen=True)
class ProxyStats:
    requests: int
    by_route: dict[str, int]
    faults: dict[str, int]
    forwarded: int  # requests the server received (faulty or not)
    writes_forwarded: int  # ... of which not GETs
    applied_unheard: int  # writes the server applied but whose answer the client lost
    upstream_errors: int  # the emulator itself failed (should stay 0)

    @property
    def faults_total(self) -> int:
        return sum(self.faults.values())


@dataclass
class _Request:
    method: str
    target: str
    head: bytes
    body: bytes  # raw, as framed on the wire
    keep_alive: bool

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass
class _Response:
    status: int
    head: bytes
    body: bytes
    keep_alive: bool


@dataclass
class _Counters:
    requests: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    forwarded: int = 0
    writes_forwarded: int = 0
    applied_unheard: int = 0
    upstream_errors: int = 0


class FaultProxy:
    """The proxy; runs an asyncio loop in a daemon thread. Use as a context manager."""

    def __init__(
        self,
        upstream_url: str,
        *,
        rate: float = 0.0,
        kinds: Iterable[str] = ALL_KINDS,
        seed: int = 0,
        match: Match | None = None,
        retry_after: str = "0.05",
        stall_seconds: float = 10.0,
    ) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the upstream must be an http:// URL, not {upstream_url!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.retry_after = retry_after
        self.stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._seen: Counter[str] = Counter()
        self.rate = 0.0
        self.kinds: tuple[str, ...] = ALL_KINDS
        self.seed = seed
        self.match: Match | None = None
        self.configure(rate=rate, kinds=kinds, seed=seed, match=match)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._url: str | None = None

    # ------------------------------------------------------------ control

    def configure(
        self,
        *,
        rate: float | None = None,
        kinds: Iterable[str] | None = None,
        seed: int | None = None,
        match: Match | None = None,
        match_all: bool = False,
    ) -> None:
        """Change the faults while running; arguments left out keep their setting
        (``match_all`` drops a ``match``)."""
        with self._lock:
            if rate is not None:
                if not 0.0 <= rate <= 1.0:
                    raise ValueError("rate must be between 0 and 1")
                self.rate = float(rate)
            if kinds is not None:
                chosen = tuple(kinds)
                unknown = set(chosen) - set(ALL_KINDS)
                if not chosen or unknown:
                    raise ValueError(
                        f"kinds must be a non-empty subset of {ALL_KINDS}, not {chosen}"
                    )
                self.kinds = chosen
            if seed is not None:
                self.seed = seed
                self._seen.clear()
            if match is not None or match_all:
                self.match = match

    def stats(self) -> ProxyStats:
        with self._lock:
            c = self._counters
            return ProxyStats(
                requests=c.requests,
                by_route=dict(c.by_route),
                faults=dict(c.faults),
                forwarded=c.forwarded,
                writes_forwarded=c.writes_forwarded,
                applied_unheard=c.applied_unheard,
                upstream_errors=c.upstream_errors,
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._counters = _Counters()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the proxy is not running: call start() first")
        return self._url

    def start(self, timeout: float = 10.0) -> FaultProxy:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
        thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_HEAD_LIMIT, backlog=1024),
            loop,
        )
        self._server = started.result(timeout)
        port = self._server.sockets[0].getsockname()[1]
        self._loop, self._thread, self._url = loop, thread, f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop = self._loop
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        loop.close()
        self._loop = self._thread = self._server = self._url = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ the draw

    def _decide(self, request: _Request) -> str | None:
        """Count the request and pick its fault (None: none)."""
        with self._lock:
            c = self._counters
            c.requests += 1
            c.by_route[route_of(request.method, request.path)] += 1
            if self.rate <= 0 or (
                self.match is not None and not self.match(request.method, request.path)
            ):
                return None
            body = _UUID_BYTES.sub(b"{id}", request.body)
            digest = hashlib.blake2b(body, digest_size=8).hexdigest()
            key = f"{self.seed}|{route_of(request.method, request.target)}|{request.target.partition('?')[2]}|{digest}"
            occurrence = self._seen[key]
            self._seen[key] += 1
            rng = random.Random(f"{key}|{occurrence}")
            if rng.random() >= self.rate:
                return None
            kind = rng.choice(self.kinds)
            c.faults[kind] += 1
            return kind

    def _count_forwarded(self, request: _Request, kind: str | None) -> None:
        with self._lock:
            c = self._counters
            c.forwarded += 1
            if request.method != "GET":
                c.writes_forwarded += 1
                if kind in FORWARDED_KINDS:
                    c.applied_unheard += 1

    def _count_upstream_error(self) -> None:
        with self._lock:
            self._counters.upstream_errors += 1

    # ------------------------------------------------------------ one client connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        upstream: _Upstream | None = None
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                kind = self._decide(request)
                if kind in STATUS_KINDS:
                    writer.write(self._status_answer(int(kind), request.keep_alive))  # type: ignore[arg-type]
                    await writer.drain()
                    if not request.keep_alive:
                        return
                    continue
                if kind == "reset_before":
                    _reset(writer)
                    return
                if kind == "stall_before":
                    await self._stall(reader)
                    _reset(writer)
                    return
                if upstream is None or upstream.stale():
                    if upstream is not None:
                        upstream.close()
                    upstream = await _Upstream.open(*self.upstream)
                try:
                    response = await upstream.exchange(request)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    self._count_upstream_error()
                    upstream.close()
                    _reset(writer)
                    return
                self._count_forwarded(request, kind)
                if not response.keep_alive:
                    upstream.close()
                    upstream = None
                if kind == "reset_after":
                    _reset(writer)
                    return
                if kind == "stall_after":
                    await self._stall(reader)
                    _reset(writer)
                    return
                if kind == "truncate":
                    if response.body:
                        writer.write(response.head + response.body[: len(response.body) // 2])
                    else:
                        writer.write(response.head[: len(response.head) // 2])
                    await writer.drain()
                    writer.close()  # a plain close: the client reads a short answer
                    return
                writer.write(response.head + response.body)
                await writer.drain()
                if not (request.keep_alive and response.keep_alive):
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return  # the client went away or spoke garbage
        except asyncio.CancelledError:
            return  # stop(): end quietly (asyncio logs a connection task that raises)
        finally:
            if upstream is not None:
                upstream.close()
            if not writer.is_closing():
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    def _status_answer(self, status: int, keep_alive: bool) -> bytes:
        message = f"{status} injected by the fault proxy"
        body = json.dumps({"detail": {"message": message, "error_code": None}}).encode()
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            f"connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        if status in (429, 503):
            lines.append(f"retry-after: {self.retry_after}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _stall(self, reader: asyncio.StreamReader) -> None:
        """Hold the connection, answering nothing, until the client hangs up (its read
        timeout) or ``stall_seconds`` pass."""
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            await asyncio.wait_for(reader.read(1 << 16), self.stall_seconds)


class _Upstream:
    """One keep-alive connection to the emulator, tied to one client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> _Upstream:
        reader, writer = await asyncio.open_connection(host, port, limit=_HEAD_LIMIT)
        return cls(reader, writer)

    def stale(self) -> bool:
        return time.monotonic() - self.last_used > UPSTREAM_IDLE_SECONDS

    async def exchange(self, request: _Request) -> _Response:
        self.writer.write(request.head + request.body)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, headers = _parse_head(head)
        parts = status_line.split(" ", 2)
        status = int(parts[1])
        version = parts[0]
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await _read_body(self.reader, headers, until_eof=True)
        self.last_used = time.monotonic()
        return _Response(status, head, body, _keep_alive(version, headers))

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


# ------------------------------------------------------------------ HTTP/1.1 framing


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"malformed header line {line!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return lines[0], headers


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if "close" in tokens:
        return False
    return version.upper() == "HTTP/1.1" or "keep-alive" in tokens


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], *, until_eof: bool
) -> bytes:
    """The body's raw bytes as framed on the wire."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            raw += size_line
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = await reader.readuntil(b"\r\n")
                    raw += line
                    if line == b"\r\n":
                        return bytes(raw)
            raw += await reader.readexactly(size + 2)
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read() if until_eof else b""


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """The next request on a client connection; None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    request_line, headers = _parse_head(head)
    method, target, version = request_line.split(" ", 2)
    body = await _read_body(reader, headers, until_eof=False)
    return _Request(method, target, head, body, _keep_alive(version, headers))


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST: SO_LINGER on, timeout 0, then close without flushing."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
