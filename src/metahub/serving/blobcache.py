"""The optional local blob cache: content addressed, verified before it is kept, LRU by size.

A blob is downloaded once into a temporary file and renamed into place only after its digest
verifies. While it downloads, every further request for it reads the same growing file (fan-out):
N concurrent clients cost one upstream download, and each starts streaming at once.

When the disk refuses a download (full, mostly), the cache steps aside rather than failing the
pull: every reader takes the rest of the blob straight from the upstream, verified over all it
was sent, and the cache reports itself degraded until it stores a blob again. Files are private
to the process (0600 in 0700 directories) whatever the umask.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import stat
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from metahub import errors, metrics
from metahub.cache.singleflight import SingleFlight
from metahub.fileio import CHUNK_SIZE, read_chunks
from metahub.oci.digest import Digest
from metahub.serving.inorder import InOrderWorker
from metahub.serving.verify import verified
from metahub.upstream.base import BlobStream, ByteRange

log = logging.getLogger("metahub.serving.blobs")

Opener = Callable[[ByteRange | None], Awaitable[BlobStream]]  # the blob, or the rest of it

# A download's bytes are readers' as soon as they arrive from the upstream: they stay in memory
# until they are on disk, and the latest on disk stay too, this many at most. A reader keeping
# up with the download (the client that started it, mostly) sends them from there instead of
# reading them back from the file, a copy and a thread hand-over less, and without waiting for
# the hash and the write of each chunk (the last byte still waits for the digest).
RECENT_BYTES = 2 * 1024 * 1024


class _Unwritable(Exception):
    """The cache's disk refused a write; the OSError is the cause."""


@dataclass(slots=True)
class _Download:
    digest: Digest
    size: int
    media_type: str
    temp: Path
    opener: Opener
    source: str
    written: int = 0  # bytes on disk
    received: int = 0  # bytes from the upstream: on disk, or in memory until they are
    done: bool = False
    error: errors.RegistryError | None = None
    unwritable: bool = False  # the disk refused it: readers take the rest from the upstream
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # Every chunk received and not yet on disk, and before them the last ones on disk as far as
    # all together stay within RECENT_BYTES; each with its offset in the blob.
    recent: deque[tuple[int, bytes]] = field(default_factory=deque)
    recent_bytes: int = 0

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def arrived(self, chunk: bytes) -> None:
        """`chunk`, the next bytes of the blob, came from the upstream: readers may have it."""
        self.recent.append((self.received, chunk))
        self.recent_bytes += len(chunk)
        self.received += len(chunk)
        self.notify()

    def stored(self, chunk: bytes) -> None:
        """`chunk`, the oldest bytes not yet on disk, is on disk: memory may let it go."""
        self.written += len(chunk)
        recent = self.recent
        while self.recent_bytes > RECENT_BYTES and len(recent) > 1:
            start, first = recent[0]
            if start + len(first) > self.written:
                break  # memory is the only place these bytes are
            recent.popleft()
            self.recent_bytes -= len(first)

    def in_memory_from(self, offset: int, limit: int) -> list[bytes]:
        """The bytes from `offset` up to `limit` that memory holds, in order; every byte the
        disk does not have yet is among them."""
        pieces = []
        for start, chunk in self.recent:
            first, last = max(start, offset), min(start + len(chunk), limit)
            if first < last:
                pieces.append(chunk[first - start : last - start])
        return pieces

    def recent_at(self, offset: int, limit: int) -> bytes | None:
        """Bytes from `offset` up to `limit` (exclusive), as far as one chunk in memory
        holds them; None when memory no longer has the bytes at `offset`."""
        for start, chunk in reversed(self.recent):
            if start <= offset < start + len(chunk):
                end = min(start + len(chunk), limit)
                if offset == start and end == start + len(chunk):
                    return chunk
                return chunk[offset - start : end - start]
            if start < offset:
                return None
        return None


class BlobCache:
    def __init__(self, path: Path, max_size: int) -> None:
        self.root = path
        self.max_size = max_size
        self._blobs = path / "blobs"
        self._temp = path / "tmp"
        for directory in (path, self._blobs, self._temp):
            _private_dir(directory)
        # The one call that writes blob bytes to disk: where a full disk shows up.
        self.write: Callable[[int, memoryview], int] = os.write
        self.degraded = False  # the last download could not be written: serving without cache
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
            _private_dir(algorithm_dir)
            for file in algorithm_dir.iterdir():
                info = file.stat()
                if stat.S_IMODE(info.st_mode) != 0o600:  # kept by a version that did not care
                    file.chmod(0o600)
                found.append((info.st_atime, f"{algorithm_dir.name}:{file.name}", info.st_size))
        for _, digest, size in sorted(found):  # least recently used first
            self._index[digest] = size
            self._bytes += size
        metrics.BLOB_CACHE_BYTES.set(self._bytes)

    @property
    def used(self) -> int:
        return self._bytes

    def _path(self, digest: Digest) -> Path:
        return self._blobs / digest.algorithm / digest.hex

    def knows(self, digest: str) -> bool:
        """Whether the blob is cached, downloading, or about to be."""
        return digest in self._index or digest in self._downloads or self._starts.in_flight(digest)

    def holds(self, digest: str) -> bool:
        """Whether the blob is in the cache, verified and whole (not merely downloading)."""
        return digest in self._index

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
        chunks = read_chunks(path, first, last - first + 1)
        return BlobStream(size, "application/octet-stream", chunks, window, file=path)

    async def fetch(self, digest: str, opener: Opener, source: str) -> BlobStream:
        """Stream a blob while it is downloaded into the cache, sharing one download.

        Requests that arrive while the upstream is still being asked wait for that same answer,
        so however many clients ask at once, the upstream is asked once. `source` names the
        upstream in messages.
        """
        download = self._downloads.get(digest)
        if download is None:
            download = await self._starts.do(digest, lambda: self._start(digest, opener, source))
        else:
            self._joined.inc()
        return BlobStream(download.size, download.media_type, self._follow(download))

    async def _start(self, digest: str, opener: Opener, source: str) -> _Download:
        upstream = await opener(None)
        parsed = Digest.parse(digest)
        temp = self._temp / f"{parsed.hex}.{secrets.token_hex(6)}"
        download = _Download(parsed, upstream.size, upstream.media_type, temp, opener, source)
        try:
            fd = _create_private(temp)
        except OSError as exc:
            self._cannot_write(download, exc)
            download.done = True
            await upstream.close()
            return download
        self._downloads[digest] = download
        download.task = asyncio.create_task(self._download(download, upstream, fd))
        return download

    async def _download(self, download: _Download, upstream: BlobStream, fd: int) -> None:
        key = str(download.digest)
        hasher = download.digest.hasher()
        # Chunks are hashed and written on a worker thread while the next ones are read from
        # the upstream; readers are told the moment a chunk is on disk.
        storing = InOrderWorker(partial(self._store, hasher, fd), download.stored)
        try:
            try:
                async for chunk in upstream.chunks:
                    download.arrived(chunk)
                    await storing.put(chunk)
                await storing.finish()
            finally:
                running = storing.running
                if running is None or running.done():
                    os.close(fd)
                else:  # broken off mid-write: the thread still holds the descriptor
                    running.add_done_callback(lambda _: os.close(fd))
            if download.written != download.size or hasher.hexdigest() != download.digest.hex:
                metrics.DIGEST_MISMATCHES.inc()
                raise errors.UpstreamError(
                    f"upstream blob {key} did not match its digest "
                    f"({download.written} bytes, sha {hasher.hexdigest()[:12]}...): discarded"
                )
            self._keep(download)
            self.degraded = False
        except _Unwritable as exc:
            self._cannot_write(download, exc.__cause__ or exc)
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
            if download.error is not None or download.unwritable:
                download.temp.unlink(missing_ok=True)

    def _store(self, hasher: hashlib._Hash, fd: int, chunk: bytes) -> None:
        hasher.update(chunk)
        self._write_all(fd, chunk)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[self.write(fd, view) :]
        except OSError as exc:
            raise _Unwritable from exc

    def _keep(self, download: _Download) -> None:
        """Move a verified download into place and count it."""
        key = str(download.digest)
        target = self._path(download.digest)
        try:
            _private_dir(target.parent)
            os.replace(download.temp, target)
        except OSError as exc:
            raise _Unwritable from exc
        self._bytes += download.size - self._index.get(key, 0)
        self._index[key] = download.size
        self._evict()

    def _cannot_write(self, download: _Download, cause: BaseException) -> None:
        download.unwritable = True
        self.degraded = True
        metrics.BLOB_CACHE_WRITE_ERRORS.inc()
        log.warning(
            "blob %s cannot be written to the cache in %s (%s): served straight from %s",
            download.digest,
            self.root,
            cause,
            download.source,
        )

    async def _follow(self, download: _Download) -> AsyncIterator[bytes]:
        """The download's bytes as they arrive, from memory or the growing file; the last byte
        only after the digest verified.

        When the disk refuses the download, the rest comes from the upstream, verified over
        the bytes this reader already sent and those it sends now.
        """
        fd = await asyncio.to_thread(self._open, download)
        offset = 0
        try:
            while fd is not None and offset < download.size:
                if download.error is not None:
                    raise download.error
                complete = download.done and not download.unwritable
                limit = download.written if complete else min(download.received, download.size - 1)
                if offset >= limit:
                    if complete:
                        return
                    if download.unwritable:
                        break  # what arrived is sent; the rest is not coming
                    await download.changed.wait()
                    continue
                chunk = download.recent_at(offset, limit)
                if chunk is None:  # further behind than memory keeps: on disk long since
                    on_disk = min(limit, download.written)
                    chunk = await asyncio.to_thread(
                        os.pread, fd, min(CHUNK_SIZE, on_disk - offset), offset
                    )
                offset += len(chunk)
                yield chunk
            if not download.unwritable:
                return
            on_disk = min(offset, download.written)
            in_memory = download.in_memory_from(on_disk, offset)
            sent = await asyncio.to_thread(_hash_prefix, fd, on_disk, in_memory, download.digest)
        finally:
            if fd is not None:
                os.close(fd)
        async for chunk in _rest_from_upstream(download, sent, offset):
            yield chunk

    def _open(self, download: _Download) -> int | None:
        """The download's file: the temporary one, where it went once verified, or None when
        the disk refused it."""
        if download.unwritable:
            return None
        try:
            return os.open(download.temp, os.O_RDONLY)
        except FileNotFoundError:
            if download.unwritable:
                return None
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


async def _rest_from_upstream(
    download: _Download, sent: hashlib._Hash, offset: int
) -> AsyncIterator[bytes]:
    """The blob from `offset` on, straight from the upstream; `sent` hashed what came before."""
    digest = str(download.digest)
    window = ByteRange(offset, None) if offset else None
    stream = await download.opener(window)
    try:
        expected = (offset, download.size - 1) if offset else None
        if stream.size != download.size or stream.content_range != expected:
            raise errors.UpstreamError(
                f"{download.source} answered for blob {digest} differently when asked again "
                f"for the rest ({stream.size} bytes, range {stream.content_range})"
            )
        rest = verified(
            stream.chunks, digest, download.size, download.source, hasher=sent, offset=offset
        )
        async for chunk in rest:
            yield chunk
    finally:
        await stream.close()


def _hash_prefix(fd: int | None, length: int, then: list[bytes], digest: Digest) -> hashlib._Hash:
    """A hasher fed the first `length` bytes of the open file `fd`, then the bytes `then`."""
    hasher = digest.hasher()
    offset = 0
    while fd is not None and offset < length:
        chunk = os.pread(fd, min(CHUNK_SIZE, length - offset), offset)
        if not chunk:
            raise errors.BlobUnknown(f"blob {digest} was cut short in the cache while read")
        hasher.update(chunk)
        offset += len(chunk)
    for chunk in then:
        hasher.update(chunk)
    return hasher


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # mkdir's mode passes through the umask, and the directory may be old


def _create_private(path: Path) -> int:
    """A new file only this process's user can read, opened for writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # exactly 0600 even where the umask took bits away
    except BaseException:
        os.close(fd)
        raise
    return fd
