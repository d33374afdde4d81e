"""Run the emulator under uvicorn: in a background thread (tests, demos) or in the
foreground (the ``localstore emulator`` command)."""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from localstore_emulator.adversary import Adversary
from localstore_emulator.app import Faults, create_app
from localstore_emulator.clock import TimestampFormat
from localstore_emulator.connections import DroppableProtocol
from localstore_emulator.state import EmulatorState


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RefusedHost(ValueError):
    """The emulator accepts any API key, so it serves loopback addresses only unless
    told otherwise (``localstore emulator`` reports this as a usage error)."""


def _check_host(host: str, allow_remote: bool) -> None:
    if not allow_remote and not _is_loopback(host):
        raise RefusedHost(
            f"refusing to serve the emulator on non-loopback host {host!r}: it accepts any "
            "API key; use 127.0.0.1 (or pass allow_remote=True deliberately)"
        )


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)  # connections queue from now on, before uvicorn takes over
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _config(app: FastAPI, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=DroppableProtocol,  # so that a rule can close a connection unanswered
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,
    )


class EmulatorServer:
    """A real HTTP server on a free loopback port, run by uvicorn in a daemon thread.

    >>> with EmulatorServer() as server:
    ...     server.state.create_dataset("demo dataset")["id"]  # doctest: +SKIP
    """

    def __init__(
        self,
        state: EmulatorState | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0,
        fail_rate: float = 0.0,
        seed: int | None = None,
        *,
        allow_remote: bool = False,
        timestamp_format: TimestampFormat | None = None,
    ) -> None:
        _check_host(host, allow_remote)
        self.state = state if state is not None else EmulatorState()
        self.host = host
        self.port = port
        self.app = create_app(
            self.state, latency_ms=latency_ms, fail_rate=fail_rate, seed=seed, timestamp_format=timestamp_format
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator is not running: call start() first")
        return self._url

    @property
    def faults(self) -> Faults:
        return self.app.state.faults

    @property
    def adversary(self) -> Adversary:
        """Rules, clock knobs and the write journal (see ``localstore_emulator.adversary``)."""
        return self.app.state.adversary

    def configure(
        self, *, latency_ms: float | None = None, fail_rate: float | None = None, seed: int | None = None
    ) -> None:
        """Change latency / fault injection while running; None keeps a setting."""
        self.faults.configure(latency_ms=latency_ms, fail_rate=fail_rate, seed=seed)

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        if self._thread is not None:
            return self
        sock = _bind(self.host, self.port)
        server = uvicorn.Server(_config(self.app, "warning"))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="localstore-emulator", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError("the emulator did not start (see the log above)")
            time.sleep(0.005)
        self._server, self._thread, self._sock, self._url = server, thread, sock, _url(sock)
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = self._url = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    db_path: str | os.PathLike[str] | None = None,
    latency_ms: float = 0,
    fail_rate: float = 0.0,
    seed_records: int = 0,
    *,
    seed: int | None = None,
    allow_remote: bool = False,
    timestamp_format: TimestampFormat = "ms",
) -> None:
    """Serve in the foreground until interrupted (Ctrl-C or SIGTERM).

    With ``seed_records`` > 0 an empty store gets one generated dataset of that
    many records; a store that already holds datasets (a reused ``db_path``) is
    left as it is.
    """
    from localstore_emulator.seed import seed_dataset

    _check_host(host, allow_remote)
    state = EmulatorState(db_path, timestamp_format=timestamp_format)
    try:
        sock = _bind(host, port)
        url = _url(sock)
        existing = state.list_datasets()
        if seed_records > 0 and existing:
            print(f"the store already holds {len(existing)} datasets; not seeding", flush=True)
        elif seed_records > 0:
            dataset_id = seed_dataset(state, seed_records, seed=seed or 0)
            print(f"seeded dataset {dataset_id} with {seed_records} records", flush=True)
            print(
                f"try: MISTRAL_API_KEY=any-key localstore --server-url {url} pull {dataset_id}",
                flush=True,
            )
        print(f"localstore API emulator listening on {url} (any bearer key is accepted)", flush=True)
        app = create_app(state, latency_ms=latency_ms, fail_rate=fail_rate, seed=seed)
        uvicorn.Server(_config(app, "info")).run(sockets=[sock])
    finally:
        state.close()
