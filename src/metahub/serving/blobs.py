"""The data path for blobs: the local cache when configured, else the upstream, verified.

Blobs are streamed in chunks and never held whole. A full download is hashed as it streams and
the last chunk is held back until the digest checks out: when an upstream serves wrong bytes,
the connection is cut before the client has them all, so no client ever completes a download
of wrong bytes (and the blob cache never keeps them).

The cache is content addressed, but repositories are not: a cached blob is served under a
repository only once that repository is known to hold it (its own download proved it, or the
upstream said so when asked).

With `pass_redirects` (`blobs.redirect: pass`, only without a blob cache), an upstream's redirect
to its storage goes to the client as it is, when the target carries none of our credentials:
the bytes then never cross MetaHub, and the client checks them against the digest it asked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from metahub import errors
from metahub.serving.blobcache import BlobCache
from metahub.serving.holders import BlobHolders
from metahub.serving.verify import verified
from metahub.upstream.base import BlobStream, ByteRange, Upstream


class BlobService:
    def __init__(
        self, upstream: Upstream, cache: BlobCache | None = None, *, pass_redirects: bool = False
    ) -> None:
        if pass_redirects and cache is not None:
            raise ValueError("a blob cache keeps blobs here: it cannot pass redirects on")
        self.upstream = upstream
        self.cache = cache
        self.pass_redirects = pass_redirects
        self.holders = BlobHolders()
        self._starting: dict[str, str] = {}  # digest -> the repository whose download starts

    async def size(self, name: str, digest: str) -> tuple[int, str]:
        if self.cache is not None:
            await self._check_holder(name, digest)
            size = self.cache.size_of(digest)
            if size is not None:
                return size, "application/octet-stream"
        return await self.upstream.blob_size(name, digest)

    async def open(self, name: str, digest: str, byte_range: ByteRange | None) -> BlobStream:
        if self.cache is None:
            return self._verified(await self._open_upstream(name, digest, byte_range), digest)
        await self._check_holder(name, digest)
        cached = self.cache.lookup(digest, byte_range)
        if cached is not None:
            return cached
        if byte_range is not None:
            return self._verified(await self._open_upstream(name, digest, byte_range), digest)
        starting = not self.cache.knows(digest)
        if starting:
            self._starting[digest] = name
        try:
            stream = await self.cache.fetch(
                digest,
                lambda window: self._open_upstream(name, digest, window),
                self.upstream.description,
            )
        finally:
            if starting and self._starting.get(digest) == name:
                del self._starting[digest]
        self.holders.add(name, digest)  # the upstream served it under this name
        return stream

    async def _check_holder(self, name: str, digest: str) -> None:
        """Before the cache serves `digest` under `name`, make sure the upstream has it there.

        Once per pair: the answer is remembered. A request that joins a download started for
        the same repository shares that download's answer instead.
        """
        assert self.cache is not None
        if not self.cache.knows(digest) or (name, digest) in self.holders:
            return
        if self._starting.get(digest) == name:
            return
        await self.upstream.blob_size(name, digest)  # BLOB_UNKNOWN when it is not there
        self.holders.add(name, digest)

    async def _open_upstream(
        self, name: str, digest: str, byte_range: ByteRange | None
    ) -> BlobStream:
        source = self.upstream.description
        stream = await self.upstream.open_blob(
            name, digest, byte_range, pass_redirect=self.pass_redirects
        )
        if stream.location is not None:
            return stream  # the client goes to the bytes itself
        if byte_range is None and stream.content_range is not None:
            if stream.content_range != (0, stream.size - 1):
                first, last = stream.content_range
                await stream.close()
                raise errors.UpstreamError(
                    f"{source} answered with bytes {first}-{last} of blob {digest}, "
                    f"asked for all {stream.size}",
                    detail={"name": name, "digest": digest},
                )
            stream.content_range = None  # all of it after all: verified like any whole blob
        stream.chunks = relayed(stream.chunks, digest, source)
        return stream

    def _verified(self, stream: BlobStream, digest: str) -> BlobStream:
        """A whole blob streamed to a client is verified on the way (the cache does its own)."""
        if stream.content_range is None and stream.location is None:  # a part cannot be
            # verified: forwarded as it came; a redirect has no bytes here to verify
            source = self.upstream.description
            stream.chunks = verified(stream.chunks, digest, stream.size, source)
        return stream


async def relayed(chunks: AsyncIterator[bytes], digest: str, source: str) -> AsyncIterator[bytes]:
    """`chunks`, with an upstream that breaks off mid-body turned into a registry error.

    The headers are out by then, so all that is left is to cut the client's connection and say
    so in one line; a traceback would only repeat what the message says.
    """
    try:
        async for chunk in chunks:
            yield chunk
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise errors.UpstreamError(
            f"{source} stopped sending blob {digest} part-way: {exc or type(exc).__name__}"
        ) from exc
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
