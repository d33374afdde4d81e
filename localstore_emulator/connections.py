"""Closing a client's connection from inside the app: a request that gets no answer.

uvicorn gives an ASGI app no handle on the socket, so the emulator serves with
``DroppableProtocol`` — uvicorn's own HTTP protocol, which also files each open
connection under (server address, client address), the ``scope``'s ``server`` and
``client``. ``drop(scope)`` aborts that connection: no status line, no headers — the
client sees the server hang up (httpx: ``RemoteProtocolError: Server disconnected
without sending a response``), as when a proxy or a crashing server cuts it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

_Key = tuple[tuple[Any, ...], tuple[Any, ...]]
_OPEN: dict[_Key, DroppableProtocol] = {}


def _key(server: Any, client: Any) -> _Key | None:
    if not server or not client:
        return None
    return (tuple(server), tuple(client))


class DroppableProtocol(AutoHTTPProtocol):  # type: ignore[valid-type,misc]
    """uvicorn's HTTP protocol, with its open connections filed for ``drop``."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self.emulator_lost = asyncio.Event()
        self.emulator_key = _key(getattr(self, "server", None), getattr(self, "client", None))
        if self.emulator_key is not None:
            _OPEN[self.emulator_key] = self

    def connection_lost(self, exc: Exception | None) -> None:
        if self.emulator_key is not None and _OPEN.get(self.emulator_key) is self:
            del _OPEN[self.emulator_key]
        super().connection_lost(exc)
        self.emulator_lost.set()


async def drop(scope: Any) -> None:
    """Close the connection of this request without answering; returns once uvicorn
    knows it is gone (so it sends nothing either). RuntimeError when the server is not
    running ``DroppableProtocol`` (e.g. an in-process ASGI transport)."""
    key = _key(scope.get("server"), scope.get("client"))
    protocol = _OPEN.get(key) if key is not None else None
    if protocol is None:
        raise RuntimeError(
            "cannot drop the connection: serve the app with EmulatorServer or serve() "
            "(uvicorn with DroppableProtocol)"
        )
    protocol.transport.abort()
    await protocol.emulator_lost.wait()
