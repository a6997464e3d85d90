"""A floor under how fast a registry sends a body, so a trickle cannot hold a request forever.

The socket read timeout alone does not end a body that comes in a byte at a time, each byte
just in time. Only time spent waiting for the registry counts towards the window: a reader that
takes its time between chunks holds the registry back, and that is not the registry's doing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True, slots=True)
class MinimumRate:
    """At least `bytes_per_second`, averaged over each `window` seconds spent waiting."""

    bytes_per_second: float
    window: float

    def __str__(self) -> str:
        return f"{self.bytes_per_second:g} bytes/s over {self.window:g} s"


class TooSlow(Exception):
    """The registry sent less than the minimum rate asks for within a window."""


async def paced_chunks(
    content: aiohttp.StreamReader, rate: MinimumRate | None
) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; TooSlow once a window ends short of the rate.

    Each chunk is a piece as the socket delivered it (up to the event loop's read buffer),
    never several joined into one: joining copies every byte once more, which cost a blob
    relay about a tenth of its rate here (docs/decisions.md).
    """
    if rate is None or rate.bytes_per_second <= 0:
        while piece := await _piece(content):
            yield piece
        return
    loop = asyncio.get_running_loop()
    needed = rate.bytes_per_second * rate.window
    waited, received = 0.0, 0
    while True:
        started = loop.time()
        chunk: bytes | None
        window_end = asyncio.timeout(rate.window - waited)
        try:
            async with window_end:
                chunk = await _piece(content)
        except TimeoutError:
            if not window_end.expired():
                raise  # the socket's own read timeout
            chunk = None
        waited += loop.time() - started
        received += len(chunk or b"")
        if waited >= rate.window:
            if received < needed:
                raise TooSlow(str(rate))
            waited, received = 0.0, 0
        if chunk is None:
            continue
        if not chunk:
            return
        yield chunk


async def _piece(content: aiohttp.StreamReader) -> bytes:
    """The next piece of the body as it arrived; b"" at its end."""
    while True:
        chunk, end_of_http_chunk = await content.readchunk()
        # (b"", True) only marks where a chunk of a chunked body ended: not the end.
        if chunk or not end_of_http_chunk:
            return chunk
