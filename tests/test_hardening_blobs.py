"""The blob path against hostile upstreams and disks.

An upstream that answers a plain GET with 206, breaks a body off, or is asked for a blob under a
repository that does not hold it; a cache disk that fills up; a process umask that would leave
cached blobs readable by others. The tests drive real servers where the client's view is the
point, and the blob cache in-process where the disk is.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from metahub import errors
from metahub.oci.digest import Digest
from metahub.serving.blobcache import BlobCache
from metahub.serving.blobs import BlobService
from metahub.serving.holders import BlobHolders
from metahub.upstream.base import BlobStream, ByteRange, Manifest, ManifestHead, Referrers
from tests.support.metahub_server import MetaHubServer
from tests.support.scrape import scrape, value
from tests.support.scripted_registry import Blob, ScriptedRegistry

MiB = 1024 * 1024
CACHE_WRITE_ERRORS = "metahub_blob_cache_write_errors_total"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedRegistry]:
    with ScriptedRegistry() as server:
        yield server


def settings(upstream: ScriptedRegistry, cache: Path | None = None) -> dict[str, object]:
    config: dict[str, object] = {
        "upstream": {"url": upstream.url, "retry_base_delay": 0.01, "retries": 0},
        "anonymous": {"unfiltered": True},
    }
    if cache is not None:
        config["cache"] = {"blobs": {"path": str(cache), "max_size": "1GiB"}}
    return config


@pytest.fixture(scope="module")
def direct(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedRegistry
) -> Iterator[MetaHubServer]:
    """MetaHub without a blob cache."""
    with MetaHubServer(tmp_path_factory.mktemp("direct"), settings(upstream)) as server:
        yield server


@pytest.fixture(scope="module")
def caching(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedRegistry
) -> Iterator[MetaHubServer]:
    """MetaHub with a blob cache."""
    tmp = tmp_path_factory.mktemp("caching")
    with MetaHubServer(tmp, settings(upstream, tmp / "blobs")) as server:
        yield server


@pytest.fixture(params=["direct", "caching"])
def hub(request: pytest.FixtureRequest) -> MetaHubServer:
    server: MetaHubServer = request.getfixturevalue(request.param)
    return server


def download(url: str, path: str) -> tuple[int, bytes, Exception | None]:
    """Status, what the client received, and how the download ended (None: complete)."""
    received = bytearray()
    status = 0
    try:
        with httpx.stream("GET", url + path, timeout=60) as response:
            status = response.status_code
            for chunk in response.iter_raw():
                received += chunk
    except httpx.HTTPError as exc:
        return status, bytes(received), exc
    return status, bytes(received), None


def new_log(server: MetaHubServer, since: int) -> str:
    return server.log_path.read_bytes()[since:].decode(errors="replace")


# -- an upstream's 206 to a request for the whole blob ------------------------------------------


def test_a_206_of_wrong_bytes_to_a_whole_request_never_completes(
    hub: MetaHubServer, upstream: ScriptedRegistry
):
    blob = Blob(os.urandom(3 * MiB), corrupt_at=MiB)
    blob.unasked_range = (0, blob.size - 1)
    upstream.add_blob(blob)

    status, received, ended = download(hub.url, f"/v2/partial/wrong/blobs/{blob.digest}")

    assert status in (200, 502)
    assert len(received) < blob.size, "a complete wrong blob reached the client"
    assert status == 502 or ended is not None


def test_a_206_of_the_whole_blob_is_verified_and_served_like_a_200(
    hub: MetaHubServer, upstream: ScriptedRegistry
):
    blob = Blob(os.urandom(2 * MiB))
    blob.unasked_range = (0, blob.size - 1)
    upstream.add_blob(blob)

    status, received, ended = download(hub.url, f"/v2/partial/whole/blobs/{blob.digest}")

    assert (status, ended) == (200, None)
    assert received == blob.content()


def test_a_206_of_a_part_to_a_whole_request_is_a_502_naming_the_upstream(
    hub: MetaHubServer, upstream: ScriptedRegistry
):
    blob = upstream.add_blob(Blob(os.urandom(MiB), unasked_range=(0, 99)))

    response = httpx.get(f"{hub.url}/v2/partial/part/blobs/{blob.digest}", timeout=60)

    assert response.status_code == 502
    (error,) = response.json()["errors"]
    assert error["code"] == "UPSTREAM_ERROR"
    assert upstream.url.removeprefix("http://") in error["message"]


# -- a body broken off mid-stream ----------------------------------------------------------------


def test_a_body_broken_off_is_one_warning_and_a_cut_connection(
    hub: MetaHubServer, upstream: ScriptedRegistry
):
    blob = upstream.add_blob(Blob(os.urandom(4 * MiB), drop_after=MiB))
    since = hub.log_path.stat().st_size

    status, received, ended = download(hub.url, f"/v2/broken/off/blobs/{blob.digest}")

    assert status == 200
    assert isinstance(ended, httpx.RemoteProtocolError)
    assert len(received) < blob.size
    log = new_log(hub, since)
    assert "Traceback" not in log
    # uvicorn's context-free ERROR for the same cut is filtered out (metahub.logsetup).
    assert "ASGI callable returned without completing response" not in log
    naming = [
        line for line in log.splitlines() if blob.digest in line and " metahub.access:" not in line
    ]
    assert naming, log
    for line in naming:
        assert " WARNING metahub." in line, log
        assert upstream.url in line, log
        assert "broke off" in line or "part-way" in line, log


# -- a cached blob asked for under a repository that does not hold it -----------------------------


def test_a_cached_blob_is_served_only_under_repositories_that_hold_it(
    caching: MetaHubServer, upstream: ScriptedRegistry
):
    blob = upstream.add_blob(Blob(os.urandom(MiB), only_in="holder/repo"))

    def path(name: str) -> str:
        return f"/v2/{name}/blobs/{blob.digest}"

    with httpx.Client(base_url=caching.url, timeout=60) as client:
        assert client.get(path("holder/repo")).content == blob.content()
        elsewhere = client.get(path("other/repo"))
        elsewhere_head = client.head(path("other/repo"))
        again = client.get(path("holder/repo"))
        blob.only_in = None  # now the second repository holds it too
        shared = client.get(path("shared/repo"))
        shared_again = client.get(path("shared/repo"))

    assert elsewhere.status_code == 404
    assert elsewhere.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert elsewhere_head.status_code == 404
    assert again.content == blob.content()
    assert upstream.count("GET", path("holder/repo")) == 1  # the download proved the pair
    assert shared.content == shared_again.content == blob.content()
    assert upstream.count("GET", path("shared/repo")) == 0  # served from the cache
    assert upstream.count("HEAD", path("shared/repo")) == 1  # asked once, then remembered


def test_the_memory_of_holders_is_bounded_and_forgets_the_least_recently_used():
    digest = "sha256:" + "1" * 64
    holders = BlobHolders(max_pairs=2)
    holders.add("a", digest)
    holders.add("b", digest)
    assert ("a", digest) in holders  # used again: b is now the least recently used
    holders.add("c", digest)

    assert len(holders) == 2
    assert ("a", digest) in holders
    assert ("c", digest) in holders
    assert ("b", digest) not in holders
    assert ("a", "sha256:" + "2" * 64) not in holders


# -- the blob cache's files and a disk that fills up -------------------------------------------


class MemoryUpstream:
    """Blobs in memory, ranges honoured, every open counted: the cache's upstream side.

    The first answer holds after its first MiB until `gate` is set.
    """

    description = "memory upstream"

    def __init__(self, *blobs: bytes, corrupt_after_first: bool = False) -> None:
        self.blobs = {str(Digest.of(data)): data for data in blobs}
        self.opens: list[ByteRange | None] = []
        self.corrupt_after_first = corrupt_after_first
        self.gate = asyncio.Event()
        self.gate.set()

    async def open_blob(
        self,
        name: str,
        digest: str,
        byte_range: ByteRange | None = None,
        *,
        pass_redirect: bool = False,
    ) -> BlobStream:
        self.opens.append(byte_range)
        data = self.blobs[digest]
        if self.corrupt_after_first and len(self.opens) > 1:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        window = byte_range.resolve(len(data)) if byte_range else None
        first, last = window if window else (0, len(data) - 1)
        gate = self.gate if len(self.opens) == 1 else None
        chunks = chunked(data[first : last + 1], gate)
        return BlobStream(len(data), "application/octet-stream", chunks, window)

    async def blob_size(self, name: str, digest: str) -> tuple[int, str]:
        return len(self.blobs[digest]), "application/octet-stream"

    async def get_manifest(self, name: str, reference: str) -> Manifest:
        raise NotImplementedError

    async def head_manifest(self, name: str, reference: str) -> ManifestHead | None:
        raise NotImplementedError

    async def tags(self, name: str) -> list[str]:
        raise NotImplementedError

    async def referrers(self, name: str, digest: str, artifact_type: str | None) -> Referrers:
        raise NotImplementedError

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def chunked(data: bytes, gate: asyncio.Event | None) -> AsyncIterator[bytes]:
    size = 256 * 1024
    for offset in range(0, len(data), size):
        if gate is not None and offset >= MiB:
            await gate.wait()
        yield data[offset : offset + size]


class FillingDisk:
    """The cache's file writes, failing with ENOSPC once `room` bytes are written."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, fd: int, data: memoryview) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return os.write(fd, data)


def written_off() -> float:
    return REGISTRY.get_sample_value(CACHE_WRITE_ERRORS) or 0.0


async def read_all(service: BlobService, name: str, digest: str) -> bytes:
    stream = await service.open(name, digest, None)
    return b"".join([chunk async for chunk in stream.chunks])


async def test_a_full_cache_disk_still_serves_the_whole_verified_blob(tmp_path: Path):
    data = os.urandom(3 * MiB)
    upstream = MemoryUpstream(data)
    cache = BlobCache(tmp_path / "cache", 10 * MiB)
    cache.write = FillingDisk(2 * MiB)
    service = BlobService(upstream, cache)
    digest = str(Digest.of(data))
    before = written_off()

    upstream.gate.clear()
    readers = [await service.open("app", digest, None) for _ in range(3)]
    # The first reader is under way when the disk fills up; the others start after it.
    first = readers[0].chunks
    received = await anext(first)
    upstream.gate.set()
    received += b"".join([chunk async for chunk in first])
    later = [b"".join([chunk async for chunk in reader.chunks]) for reader in readers[1:]]
    bodies = [received, *later]

    assert bodies == [data] * 3
    assert cache.degraded
    assert written_off() == before + 1
    assert cache.size_of(digest) is None
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    # The cache's download; the first reader, after the bytes it was sent (what arrived, the
    # 2 MiB the disk took and more from memory), asks for the rest only, verified over them
    # all; the later readers ask for all of it.
    download, rest, *others = upstream.opens
    assert download is None and others == [None, None]
    assert rest is not None and rest.last is None and 2 * MiB <= rest.first < len(data)

    cache.write = os.write  # room again: the next download is kept and the cache recovers
    assert await read_all(service, "app", digest) == data
    assert not cache.degraded
    assert cache.size_of(digest) == len(data)


async def test_when_the_cache_cannot_write_wrong_bytes_still_never_complete(tmp_path: Path):
    data = os.urandom(3 * MiB)
    upstream = MemoryUpstream(data, corrupt_after_first=True)
    cache = BlobCache(tmp_path / "cache", 10 * MiB)
    cache.write = FillingDisk(MiB)
    service = BlobService(upstream, cache)

    stream = await service.open("app", str(Digest.of(data)), None)
    received = bytearray()
    with pytest.raises(errors.UpstreamError):
        async for chunk in stream.chunks:
            received += chunk
    assert len(received) < len(data)


async def test_cached_blobs_are_private_whatever_the_umask(tmp_path: Path):
    data = os.urandom(MiB)
    previous = os.umask(0)
    try:
        cache = BlobCache(tmp_path / "cache", 10 * MiB)
        service = BlobService(MemoryUpstream(data), cache)
        assert await read_all(service, "app", str(Digest.of(data))) == data
    finally:
        os.umask(previous)

    root = tmp_path / "cache"
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} is {oct(mode)}"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (the tests run as root, as `make test` installs packages as root)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    assert mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr.decode()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_cache_disk_is_served_through_and_reported(
    small_disk: Path, tmp_path: Path, upstream: ScriptedRegistry
):
    blob = upstream.add_blob(Blob(os.urandom(3 * MiB)))
    path = f"/v2/full/disk/blobs/{blob.digest}"
    with MetaHubServer(tmp_path, settings(upstream, small_disk / "blobs")) as hub:
        first = download(hub.url, path)
        second = download(hub.url, path)
        ready = httpx.get(f"{hub.url}/readyz", timeout=30)
        errors_counted = value(scrape(hub.url), CACHE_WRITE_ERRORS)

    assert first == (200, blob.content(), None)
    assert second == (200, blob.content(), None)
    assert ready.status_code == 200
    assert json.loads(ready.content)["blob_cache"] == "degraded"
    assert errors_counted >= 1
