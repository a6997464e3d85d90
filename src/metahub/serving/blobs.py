"""The data path for blobs: the local cache when configured, else the upstream, verified.

Blobs are streamed in chunks and never held whole. A full download is hashed as it streams and
the last chunk is held back until the digest checks out: when an upstream serves wrong bytes,
the connection is cut before the client has them all, so no client ever completes a download
of wrong bytes (and the blob cache never keeps them).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from metahub import errors, metrics
from metahub.oci.digest import Digest
from metahub.serving.blobcache import BlobCache
from metahub.upstream.base import BlobStream, ByteRange, Upstream

log = logging.getLogger("metahub.serving.blobs")


class BlobService:
    def __init__(self, upstream: Upstream, cache: BlobCache | None = None) -> None:
        self.upstream = upstream
        self.cache = cache

    async def size(self, name: str, digest: str) -> tuple[int, str]:
        if self.cache is not None:
            size = self.cache.size_of(digest)
            if size is not None:
                return size, "application/octet-stream"
        return await self.upstream.blob_size(name, digest)

    async def open(self, name: str, digest: str, byte_range: ByteRange | None) -> BlobStream:
        if self.cache is not None:
            cached = self.cache.lookup(digest, byte_range)
            if cached is not None:
                return cached
            if byte_range is None:
                return await self.cache.fetch(
                    digest, lambda: self.upstream.open_blob(name, digest, None)
                )
        stream = await self.upstream.open_blob(name, digest, byte_range)
        if stream.content_range is not None:
            return stream  # a part cannot be verified; it is forwarded as the upstream sent it
        stream.chunks = verified(stream.chunks, digest, stream.size, self.upstream.description)
        return stream


async def verified(
    chunks: AsyncIterator[bytes], digest: str, size: int, source: str
) -> AsyncIterator[bytes]:
    """Yield `chunks` one behind, and the last only once the bytes match `digest`."""
    expected = Digest.parse(digest)
    hasher = expected.hasher()
    total = 0
    held: bytes | None = None
    try:
        async for chunk in chunks:
            hasher.update(chunk)
            total += len(chunk)
            if held is not None:
                yield held
            held = chunk
        if total != size or hasher.hexdigest() != expected.hex:
            metrics.DIGEST_MISMATCHES.inc()
            log.error("%s served %d bytes for blob %s that do not match it", source, total, digest)
            raise errors.UpstreamError(f"{source} served bytes that do not match blob {digest}")
        if held is not None:
            yield held
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
