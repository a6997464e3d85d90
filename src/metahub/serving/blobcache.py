"""The optional local blob cache: content addressed, verified before it is kept, LRU by size.

A blob is downloaded once into a temporary file and renamed into place only after its digest
verifies. While it downloads, every further request for it reads the same growing file (fan-out):
N concurrent clients cost one upstream download, and each starts streaming at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from metahub import errors, metrics
from metahub.cache.singleflight import SingleFlight
from metahub.fileio import CHUNK_SIZE, read_chunks
from metahub.oci.digest import Digest
from metahub.upstream.base import BlobStream, ByteRange

log = logging.getLogger("metahub.serving.blobs")

Opener = Callable[[], Awaitable[BlobStream]]


@dataclass(slots=True)
class _Download:
    digest: Digest
    size: int
    media_type: str
    temp: Path
    written: int = 0
    done: bool = False
    error: errors.RegistryError | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class BlobCache:
    def __init__(self, path: Path, max_size: int) -> None:
        self.root = path
        self.max_size = max_size
        self._blobs = path / "blobs"
        self._temp = path / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._temp.mkdir(parents=True, exist_ok=True)
        for leftover in self._temp.iterdir():  # downloads a crash interrupted
            leftover.unlink(missing_ok=True)
        self._index: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._downloads: dict[str, _Download] = {}
        self._starts: SingleFlight[str, _Download] = SingleFlight("blob")
        self._joined = metrics.COALESCED.labels("blob")
        self._load_index()

    def _load_index(self) -> None:
        found = []
        for algorithm_dir in self._blobs.iterdir():
            for file in algorithm_dir.iterdir():
                stat = file.stat()
                found.append((stat.st_atime, f"{algorithm_dir.name}:{file.name}", stat.st_size))
        for _, digest, size in sorted(found):  # least recently used first
            self._index[digest] = size
            self._bytes += size
        metrics.BLOB_CACHE_BYTES.set(self._bytes)

    @property
    def used(self) -> int:
        return self._bytes

    def _path(self, digest: Digest) -> Path:
        return self._blobs / digest.algorithm / digest.hex

    def size_of(self, digest: str) -> int | None:
        size = self._index.get(digest)
        if size is None:
            download = self._downloads.get(digest)
            return download.size if download is not None else None
        return size

    def lookup(self, digest: str, byte_range: ByteRange | None) -> BlobStream | None:
        """A stream of a cached blob, or None; counts as a use for LRU."""
        size = self._index.get(digest)
        if size is None:
            metrics.CACHE.labels("blob", "miss").inc()
            return None
        path = self._path(Digest.parse(digest))
        if not path.is_file():  # removed behind our back
            self._forget(digest)
            metrics.CACHE.labels("blob", "miss").inc()
            return None
        metrics.CACHE.labels("blob", "hit").inc()
        self._index.move_to_end(digest)
        window = byte_range.resolve(size) if byte_range else None
        first, last = window if window else (0, size - 1)
        return BlobStream(
            size, "application/octet-stream", read_chunks(path, first, last - first + 1), window
        )

    async def fetch(self, digest: str, opener: Opener) -> BlobStream:
        """Stream a blob while it is downloaded into the cache, sharing one download.

        Requests that arrive while the upstream is still being asked wait for that same answer,
        so however many clients ask at once, the upstream is asked once.
        """
        download = self._downloads.get(digest)
        if download is None:
            download = await self._starts.do(digest, lambda: self._start(digest, opener))
        else:
            self._joined.inc()
        return BlobStream(download.size, download.media_type, self._follow(download))

    async def _start(self, digest: str, opener: Opener) -> _Download:
        upstream = await opener()
        parsed = Digest.parse(digest)
        temp = self._temp / f"{parsed.hex}.{secrets.token_hex(6)}"
        download = _Download(parsed, upstream.size, upstream.media_type, temp)
        temp.touch()
        self._downloads[digest] = download
        download.task = asyncio.create_task(self._download(download, upstream))
        return download

    async def _download(self, download: _Download, upstream: BlobStream) -> None:
        key = str(download.digest)
        hasher = download.digest.hasher()
        try:
            with download.temp.open("wb") as out:
                async for chunk in upstream.chunks:
                    hasher.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
                    download.written += len(chunk)
                    download.notify()
            if download.written != download.size or hasher.hexdigest() != download.digest.hex:
                metrics.DIGEST_MISMATCHES.inc()
                raise errors.UpstreamError(
                    f"upstream blob {key} did not match its digest "
                    f"({download.written} bytes, sha {hasher.hexdigest()[:12]}...): discarded"
                )
            target = self._path(download.digest)
            target.parent.mkdir(exist_ok=True)
            os.replace(download.temp, target)
            self._bytes += download.size - self._index.get(key, 0)
            self._index[key] = download.size
            self._evict()
        except errors.RegistryError as exc:
            download.error = exc
            log.warning("blob %s not cached: %s", key, exc.message)
        except Exception as exc:
            download.error = errors.UpstreamError(f"download of blob {key} failed: {exc}")
            log.exception("blob %s download failed", key)
        finally:
            await upstream.close()
            download.done = True
            download.notify()
            self._downloads.pop(key, None)
            if download.error is not None:
                download.temp.unlink(missing_ok=True)

    async def _follow(self, download: _Download) -> AsyncIterator[bytes]:
        """Read the growing file; the last byte only after the digest verified."""
        fd = await asyncio.to_thread(self._open, download)
        offset = 0
        try:
            while offset < download.size:
                verified = download.done and download.error is None
                if download.error is not None:
                    raise download.error
                limit = download.written if verified else min(download.written, download.size - 1)
                if offset >= limit:
                    if verified:
                        break
                    await download.changed.wait()
                    continue
                chunk = await asyncio.to_thread(
                    os.pread, fd, min(CHUNK_SIZE, limit - offset), offset
                )
                offset += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    def _open(self, download: _Download) -> int:
        """The download's file: the temporary one, or where it went once verified."""
        try:
            return os.open(download.temp, os.O_RDONLY)
        except FileNotFoundError:
            if download.error is not None:
                raise download.error from None
        try:  # verified and renamed into place before this reader began
            return os.open(self._path(download.digest), os.O_RDONLY)
        except FileNotFoundError:
            raise errors.BlobUnknown(
                f"blob {download.digest} left the cache while it was being read"
            ) from None

    def _evict(self) -> None:
        while self._bytes > self.max_size and len(self._index) > 1:
            digest, size = self._index.popitem(last=False)
            self._path(Digest.parse(digest)).unlink(missing_ok=True)
            self._bytes -= size
            log.info("evicted blob %s (%d bytes) from the cache", digest, size)
        metrics.BLOB_CACHE_BYTES.set(self._bytes)

    def _forget(self, digest: str) -> None:
        size = self._index.pop(digest, None)
        if size is not None:
            self._bytes -= size
            metrics.BLOB_CACHE_BYTES.set(self._bytes)
