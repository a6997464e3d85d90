"""Streaming a blob so that no client completes a download of bytes that do not match it."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

from metahub import errors, metrics
from metahub.oci.digest import Digest

log = logging.getLogger("metahub.serving.blobs")


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
    if hasher is None:
        hasher = expected.hasher()
    total = offset
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
