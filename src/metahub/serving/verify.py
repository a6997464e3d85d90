"""Streaming a blob so that no client completes a download of bytes that do not match it.

Hashing runs on a worker thread, one chunk behind the bytes in flight: hashlib releases the GIL
for large buffers, so the second core hashes chunk N while the event loop sends chunk N-1 and
reads chunk N+1. The chunks of one blob are hashed strictly in order (each waits for the one
before), and the last chunk is still held back until the whole digest checks out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator

from metahub import errors, metrics
from metahub.oci.digest import Digest

log = logging.getLogger("metahub.serving.blobs")

# Below this, handing a chunk to a thread costs more than hashing it where it is.
THREADED_HASH_MIN = 64 * 1024


class PipelinedHasher:
    """A hasher fed on a worker thread, in order, while the caller moves on to the next chunk."""

    __slots__ = ("_pending", "hasher")

    def __init__(self, hasher: hashlib._Hash) -> None:
        self.hasher = hasher
        self._pending: asyncio.Future[None] | None = None

    async def feed(self, chunk: bytes | memoryview) -> None:
        """Start hashing `chunk` once the chunk before it is hashed; returns without waiting."""
        await self.settled()
        if len(chunk) < THREADED_HASH_MIN:
            self.hasher.update(chunk)
        else:
            loop = asyncio.get_running_loop()
            self._pending = loop.run_in_executor(None, self.hasher.update, chunk)

    async def settled(self) -> None:
        """Wait until every chunk fed so far is hashed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def hexdigest(self) -> str:
        await self.settled()
        return self.hasher.hexdigest()


async def verified(
    chunks: AsyncIterator[bytes],
    digest: str,
    size: int,
    source: str,
    *,
    hasher: hashlib._Hash | None = None,
    offset: int = 0,
) -> AsyncIterator[bytes]:
    """Yield `chunks` one behind, and the last only once the bytes match `digest`.

    `chunks` may be the rest of a blob whose first `offset` bytes the client already has and
    `hasher` has hashed: what is verified is then exactly what the client gets.
    """
    expected = Digest.parse(digest)
    pipeline = PipelinedHasher(hasher if hasher is not None else expected.hasher())
    total = offset
    held: bytes | None = None
    try:
        async for chunk in chunks:
            await pipeline.feed(chunk)  # hashed while `held` goes out and the next is read
            total += len(chunk)
            if held is not None:
                yield held
            held = chunk
        actual = await pipeline.hexdigest()
        if total != size or actual != expected.hex:
            metrics.DIGEST_MISMATCHES.inc()
            log.error("%s served %d bytes for blob %s that do not match it", source, total, digest)
            raise errors.UpstreamError(f"{source} served bytes that do not match blob {digest}")
        if held is not None:
            yield held
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
