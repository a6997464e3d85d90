"""uvicorn's HTTP protocol, with a response's head and a small body sent in one system call.

uvicorn writes the status line and headers, then the body, each with its own `transport.write`,
and uvloop sends each at once: two `send` system calls for every manifest, which the profile of
warm pulls put at two fifths of the server's CPU (docs/decisions.md). Here small writes made in
one turn of the event loop are joined and sent together at the end of that turn. Large writes
(blob chunks) go out as they come, after anything held back, so streaming and its back-pressure
are unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Writes up to this size are held until the end of the turn; the head of a response and a
# manifest fit, a blob chunk does not.
HOLD_LIMIT = 16 * 1024


class CoalescingTransport:
    """A transport whose small writes within one event-loop turn leave in one `write`."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is None:
            if len(data) > HOLD_LIMIT:
                self._transport.write(data)
                return
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        elif len(self._held) + len(data) <= HOLD_LIMIT:
            self._held += data
        else:
            self.flush()
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class MetaHubHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)
