"""The local blob cache: content addressed, kept only once verified, LRU by size, and one
upstream download shared by every client that asks while it runs (fan-out).

The upstream is a scripted registry on loopback that counts requests and bytes, and can hold a
blob part-way until the test releases it, so "while it downloads" is a state the test controls.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.inprocess import InProcessHub
from tests.support.measured import MeasuredMetaHub, PeakRss
from tests.support.metahub_server import MetaHubServer
from tests.support.scrape import Samples, scrape, value
from tests.support.scripted_registry import Blob, ScriptedRegistry

MiB = 1024 * 1024
READERS = 8
COALESCED = "metahub_coalesced_waiters_total"


def config(upstream: ScriptedRegistry, cache: Path, max_size: int) -> dict[str, object]:
    return {
        "upstream": {"url": upstream.url, "retry_base_delay": 0.01},
        "anonymous": {"unfiltered": True},
        "cache": {"blobs": {"path": str(cache), "max_size": max_size}},
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedRegistry]:
    with ScriptedRegistry() as server:
        yield server


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("blob-cache")


@pytest.fixture(scope="module")
def hub(cache_dir: Path, upstream: ScriptedRegistry) -> Iterator[MeasuredMetaHub]:
    (cache_dir / "hub").mkdir()
    settings = config(upstream, cache_dir / "blobs", 1024 * MiB)
    with MeasuredMetaHub(cache_dir / "hub", settings) as server:
        yield server


@pytest.fixture
def client(hub: MetaHubServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hub.url, timeout=60) as http:
        yield http


def path_of(blob: Blob) -> str:
    return f"/v2/cache/blobs/blobs/{blob.digest}"


def cached_file(cache: Path, blob: Blob) -> Path:
    algorithm, hex_digest = blob.digest.split(":")
    return cache / "blobs" / algorithm / hex_digest


def temp_files(cache: Path) -> list[Path]:
    return list((cache / "tmp").iterdir())


def wait_until(condition: object, timeout: float = 20) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_a_cached_blob_is_served_without_the_upstream(
    client: httpx.Client, upstream: ScriptedRegistry, cache_dir: Path, hub: MetaHubServer
):
    blob = upstream.add_blob(Blob(os.urandom(3 * MiB)))
    path = path_of(blob)

    first = client.get(path)
    again = client.get(path)
    head = client.head(path)
    window = client.get(path, headers={"Range": "bytes=2000000-2000099"})

    assert first.content == again.content == blob.content()
    assert cached_file(cache_dir / "blobs", blob).read_bytes() == blob.content()
    assert head.headers["content-length"] == str(blob.size)
    assert window.status_code == 206
    assert window.headers["content-range"] == f"bytes 2000000-2000099/{blob.size}"
    assert window.content == blob.content()[2000000:2000100]
    assert upstream.count(path=path) == 1
    samples = scrape(hub.url)
    assert value(samples, "metahub_cache_requests_total", cache="blob", result="hit") >= 2
    assert value(samples, "metahub_blob_cache_bytes") >= blob.size


def test_a_blob_is_kept_only_once_its_digest_verifies(
    client: httpx.Client, upstream: ScriptedRegistry, cache_dir: Path
):
    blob = upstream.add_blob(Blob(os.urandom(4 * MiB), gate_after=MiB))
    cache = cache_dir / "blobs"
    with client.stream("GET", path_of(blob)) as response:
        # Held part-way: the bytes so far are in a temporary file, nothing is in the cache.
        wait_until(lambda: [p.stat().st_size for p in temp_files(cache)] == [MiB])
        assert not cached_file(cache, blob).exists()
        blob.gate.set()
        received = response.read()

    assert received == blob.content()
    wait_until(cached_file(cache, blob).exists)
    assert cached_file(cache, blob).read_bytes() == blob.content()
    assert temp_files(cache) == []


async def test_concurrent_clients_share_one_upstream_download(
    hub: MetaHubServer, upstream: ScriptedRegistry
):
    """Clients that ask before the upstream has answered, and clients that ask while the blob
    is coming in, all read the one download."""
    blob = upstream.add_blob(Blob(os.urandom(4 * MiB), gate_after=MiB))
    path = path_of(blob)
    before = scrape(hub.url)
    answer = upstream.hold(path)
    streaming = 0

    async def read(client: httpx.AsyncClient) -> bytes:
        nonlocal streaming
        async with client.stream("GET", path) as response:
            assert response.status_code == 200
            streaming += 1
            return await response.aread()

    limits = httpx.Limits(max_connections=2 * READERS)
    async with httpx.AsyncClient(base_url=hub.url, limits=limits, timeout=60) as client:
        early = [asyncio.create_task(read(client)) for _ in range(READERS)]
        await wait_for_misses(hub.url, before, READERS)  # all asked; the upstream has not answered
        answer.set()
        await asyncio.to_thread(wait_until, lambda: upstream.sent[path] == MiB)
        late = [asyncio.create_task(read(client)) for _ in range(READERS)]
        await asyncio.to_thread(wait_until, lambda: streaming == 2 * READERS)
        blob.gate.set()
        bodies = await asyncio.gather(*early, *late)

    assert all(body == blob.content() for body in bodies)
    assert upstream.count("GET", path) == 1
    waiters = value(scrape(hub.url), COALESCED, kind="blob") - value(before, COALESCED, kind="blob")
    assert waiters == 2 * READERS - 1


async def wait_for_misses(url: str, before: Samples, more: int) -> None:
    name, labels = "metahub_cache_requests_total", {"cache": "blob", "result": "miss"}
    wanted = value(before, name, **labels) + more
    deadline = time.monotonic() + 30
    while value(await asyncio.to_thread(scrape, url), name, **labels) < wanted:
        assert time.monotonic() < deadline, "the requests never reached the blob cache"
        await asyncio.sleep(0.02)


async def test_wrong_bytes_reach_no_reader_completely_and_are_never_cached(
    hub: MetaHubServer, upstream: ScriptedRegistry, cache_dir: Path
):
    blob = upstream.add_blob(Blob(os.urandom(3 * MiB), gate_after=MiB, corrupt_at=10))
    path = path_of(blob)

    async def read(client: httpx.AsyncClient) -> tuple[int, Exception | None]:
        received = 0
        try:
            async with client.stream("GET", path) as response:
                async for chunk in response.aiter_raw():
                    received += len(chunk)
        except httpx.HTTPError as exc:
            return received, exc
        return received, None

    before = scrape(hub.url)
    async with httpx.AsyncClient(base_url=hub.url, timeout=60) as client:
        readers = [asyncio.create_task(read(client)) for _ in range(3)]
        await wait_for_misses(hub.url, before, 3)  # all three read the download
        await asyncio.to_thread(wait_until, lambda: upstream.sent[path] == MiB)
        blob.gate.set()
        results = await asyncio.gather(*readers)
        # Nothing was kept, so the next request asks the upstream again.
        retried = await read(client)

    for received, ended in [*results, retried]:
        assert isinstance(ended, httpx.RemoteProtocolError)
        assert received < blob.size
    assert not cached_file(cache_dir / "blobs", blob).exists()
    assert temp_files(cache_dir / "blobs") == []
    assert upstream.count("GET", path) == 2


def test_a_range_of_a_blob_not_cached_is_forwarded_and_not_cached(
    client: httpx.Client, upstream: ScriptedRegistry, cache_dir: Path
):
    blob = upstream.add_blob(Blob(os.urandom(2 * MiB)))

    window = client.get(path_of(blob), headers={"Range": "bytes=10-19"})

    assert window.status_code == 206
    assert window.content == blob.content()[10:20]
    (asked,) = upstream.requests("GET", path_of(blob))
    assert asked.headers["Range"] == "bytes=10-19"
    assert upstream.sent[path_of(blob)] == 10
    assert not cached_file(cache_dir / "blobs", blob).exists()


def test_the_least_recently_used_blobs_are_evicted_beyond_max_size_and_the_rest_kept(
    tmp_path: Path, upstream: ScriptedRegistry
):
    a, b, c = (upstream.add_blob(Blob(os.urandom(MiB))) for _ in range(3))
    cache = tmp_path / "blobs"
    max_size = 2 * MiB + MiB // 2
    with (
        InProcessHub(tmp_path, config(upstream, cache, max_size)) as hub,
        hub.client() as client,
    ):
        for blob in (a, b, a, c):  # a is used again, so b is the least recently used
            assert client.get(path_of(blob)).content == blob.content()
            wait_until(cached_file(cache, blob).exists)
        wait_until(lambda: not cached_file(cache, b).exists())
        held = value(scrape(client), "metahub_blob_cache_bytes")
        # Now a is used again and b comes back: c is the least recently used.
        assert client.get(path_of(a)).content == a.content()
        assert client.get(path_of(b)).content == b.content()
        wait_until(lambda: not cached_file(cache, c).exists())

    assert cached_file(cache, a).exists()
    assert cached_file(cache, b).exists()
    assert held == 2 * MiB
    assert upstream.count("GET", path_of(a)) == 1
    assert upstream.count("GET", path_of(b)) == 2
    assert upstream.count("GET", path_of(c)) == 1

    # What is on disk is served after a restart without asking the upstream.
    with (
        InProcessHub(tmp_path, config(upstream, cache, max_size)) as hub,
        hub.client() as client,
    ):
        assert client.get(path_of(a)).content == a.content()
        assert client.get(path_of(b)).content == b.content()
    assert upstream.count("GET", path_of(a)) == 1
    assert upstream.count("GET", path_of(b)) == 2


@pytest.mark.slow  # 256 MiB through a real server, its memory sampled
def test_a_large_blob_goes_through_the_cache_in_flat_memory(
    client: httpx.Client, upstream: ScriptedRegistry, hub: MeasuredMetaHub, cache_dir: Path
):
    """Two readers of one 256 MiB download, one of them slow: the process does not grow."""
    blob = upstream.add_blob(Blob(os.urandom(MiB), repeat=256))
    baseline = hub.rss()
    with (
        PeakRss(hub) as rss,
        client.stream("GET", path_of(blob)) as slow,
        httpx.Client(base_url=hub.url, timeout=60) as other,
    ):
        chunks = slow.iter_raw(MiB)
        first = next(chunks)
        fast = other.get(path_of(blob))  # runs to the end while the slow one waits
        rest = sum(len(chunk) for chunk in chunks)

    assert len(first) + rest == blob.size
    assert len(fast.content) == blob.size
    assert upstream.count("GET", path_of(blob)) == 1
    assert cached_file(cache_dir / "blobs", blob).stat().st_size == blob.size
    assert rss.peak - baseline < 64 * MiB, f"grew by {(rss.peak - baseline) / MiB:.1f} MiB"


@pytest.mark.slow  # 1 GiB through a real server twice, its memory sampled
def test_a_1_gib_blob_fills_the_cache_and_leaves_it_in_flat_memory(
    upstream: ScriptedRegistry, tmp_path: Path
):
    """The fill (download, hash, write, serve) and then a hit (`sendfile`) of 1 GiB: neither
    grows the process, and both deliver exactly the blob's bytes."""
    blob = upstream.add_blob(Blob(os.urandom(MiB), repeat=1024))
    cache = tmp_path / "blobs"
    (tmp_path / "hub").mkdir()
    with (
        MeasuredMetaHub(tmp_path / "hub", config(upstream, cache, 2048 * MiB)) as hub,
        httpx.Client(base_url=hub.url, timeout=120) as client,
    ):
        warm_up = upstream.add_blob(Blob(os.urandom(4 * MiB)))
        assert client.get(path_of(warm_up)).content == warm_up.content()
        baseline = hub.rss()
        for attempt in ("fill", "hit"):
            received = hashlib.sha256()
            size = 0
            with PeakRss(hub) as rss, client.stream("GET", path_of(blob)) as response:
                assert response.status_code == 200
                for chunk in response.iter_raw(MiB):
                    received.update(chunk)
                    size += len(chunk)
            assert (size, f"sha256:{received.hexdigest()}") == (blob.size, blob.digest), attempt
            assert rss.samples > 10, attempt
            grown = (rss.peak - baseline) / MiB
            assert grown < 64, f"the {attempt} grew the process by {grown:.1f} MiB"
    assert upstream.count("GET", path_of(blob)) == 1  # the second was a hit
    assert cached_file(cache, blob).stat().st_size == blob.size


def test_a_reader_far_behind_a_download_gets_the_same_bytes_as_one_at_its_head(
    client: httpx.Client, upstream: ScriptedRegistry, hub: MetaHubServer
):
    """Readers at the head of a download are sent its latest bytes from memory; one that fell
    further behind than memory keeps reads them back from the file. Every byte is distinct
    here, so a piece sent from the wrong place shows."""
    blob = upstream.add_blob(Blob(os.urandom(24 * MiB), gate_after=MiB))
    with (
        client.stream("GET", path_of(blob)) as behind,
        httpx.Client(base_url=hub.url, timeout=60) as other,
    ):
        chunks = behind.iter_raw(64 * 1024)
        first = next(chunks)  # then this reader stops while the download goes on
        blob.gate.set()
        ahead = other.get(path_of(blob)).content  # at the head to the end
        rest = b"".join(chunks)

    assert ahead == blob.content()
    assert first + rest == blob.content()
    assert upstream.count("GET", path_of(blob)) == 1


def test_a_fill_and_then_a_hit_are_byte_exact(
    client: httpx.Client, upstream: ScriptedRegistry, cache_dir: Path
):
    # Not a multiple of any read or chunk size, so the last pieces are odd-sized on every path.
    content = os.urandom(5 * MiB + 12345)
    blob = upstream.add_blob(Blob(content))
    path = path_of(blob)

    filled = client.get(path)
    wait_until(cached_file(cache_dir / "blobs", blob).exists)
    hit = client.get(path)

    assert filled.status_code == hit.status_code == 200
    assert filled.content == content
    assert hit.content == content
    assert hit.headers["content-length"] == str(len(content))
    assert upstream.count("GET", path) == 1


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        pytest.param("bytes=0-0", 0, 0, id="first-byte"),
        pytest.param("bytes=1048570-2097160", 1048570, 2097160, id="across-chunks"),
        pytest.param("bytes=3000000-", 3000000, 3 * MiB + 6, id="open-ended"),
        pytest.param("bytes=-100", 3 * MiB + 7 - 100, 3 * MiB + 6, id="suffix"),
        pytest.param("bytes=-99999999", 0, 3 * MiB + 6, id="suffix-past-start"),
        pytest.param("bytes=3145700-99999999", 3145700, 3 * MiB + 6, id="last-past-end"),
    ],
)
def test_ranges_of_a_cached_blob(
    client: httpx.Client,
    upstream: ScriptedRegistry,
    cache_dir: Path,
    header: str,
    first: int,
    last: int,
):
    content = os.urandom(3 * MiB + 7)
    blob = upstream.add_blob(Blob(content))
    path = path_of(blob)
    client.get(path)
    wait_until(cached_file(cache_dir / "blobs", blob).exists)

    window = client.get(path, headers={"Range": header})
    head = client.head(path, headers={"Range": header})

    assert window.status_code == head.status_code == 206
    assert window.headers["content-range"] == f"bytes {first}-{last}/{len(content)}"
    assert window.content == content[first : last + 1]
    assert head.headers["content-range"] == window.headers["content-range"]
    assert head.headers["content-length"] == str(last - first + 1)
    assert head.content == b""
    assert upstream.count("GET", path) == 1  # every range from the cache


def test_a_range_past_the_end_of_a_cached_blob_is_416(
    client: httpx.Client, upstream: ScriptedRegistry, cache_dir: Path
):
    blob = upstream.add_blob(Blob(os.urandom(MiB)))
    path = path_of(blob)
    client.get(path)
    wait_until(cached_file(cache_dir / "blobs", blob).exists)

    answer = client.get(path, headers={"Range": f"bytes={MiB}-"})

    assert answer.status_code == 416
    assert answer.headers["content-range"] == f"bytes */{MiB}"
    assert answer.json()["errors"][0]["code"] == "RANGE_INVALID"
    assert upstream.count("GET", path) == 1
