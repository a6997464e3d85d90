"""Blobs without the local cache: streamed with backpressure, verified while streaming, Range
forwarded, redirects followed without the upstream's credentials, memory flat for 1 GiB.

The upstream is a scripted registry on loopback that wants Basic credentials, counts what it
sends, and can corrupt a blob or redirect it to a second server (the "CDN", on another loopback
address) that records the headers it gets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.measured import MeasuredMetaHub, PeakRss
from tests.support.scrape import scrape, value
from tests.support.scripted_registry import (
    CDN_HOST,
    UPSTREAM_CREDENTIALS,
    Blob,
    ScriptedRegistry,
    relaying_config,
)

MiB = 1024 * 1024
UPSTREAM = "metahub_upstream_requests_total"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedRegistry]:
    with ScriptedRegistry(basic_auth=UPSTREAM_CREDENTIALS) as server:
        yield server


@pytest.fixture(scope="module")
def cdn() -> Iterator[ScriptedRegistry]:
    with ScriptedRegistry(CDN_HOST) as server:
        yield server


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedRegistry
) -> Iterator[MeasuredMetaHub]:
    config = relaying_config(upstream)
    with MeasuredMetaHub(tmp_path_factory.mktemp("blobs"), config) as server:
        # The first upstream request meets the 401 challenge and is sent again with the
        # credentials; meeting it here keeps that request out of every test's counts.
        httpx.get(f"{server.url}/v2/blobs/warm-up/blobs/sha256:{'0' * 64}", timeout=30)
        yield server


@pytest.fixture
def client(hub: MeasuredMetaHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hub.url, timeout=60) as http:
        yield http


def blob_path(blob: Blob, name: str = "blobs/test") -> str:
    return f"/v2/{name}/blobs/{blob.digest}"


def download(client: httpx.Client, path: str) -> tuple[bytes, Exception | None]:
    """What the client received, and how the download ended (None: complete)."""
    received = bytearray()
    try:
        with client.stream("GET", path) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received += chunk
    except httpx.HTTPError as exc:
        return bytes(received), exc
    return bytes(received), None


def test_a_blob_streams_through_with_its_digest_verified(
    client: httpx.Client, upstream: ScriptedRegistry
):
    blob = upstream.add_blob(Blob(os.urandom(3 * MiB + 17)))

    head = client.head(blob_path(blob))
    received, ended = download(client, blob_path(blob))

    assert head.status_code == 200
    assert head.headers["content-length"] == str(blob.size)
    assert head.headers["docker-content-digest"] == blob.digest
    assert ended is None
    assert received == blob.content()


@pytest.mark.parametrize(
    ("size", "corrupt_at"),
    [
        pytest.param(10_000, 5_000, id="one-chunk"),
        pytest.param(5 * MiB, 0, id="first-byte-of-many-chunks"),
        pytest.param(5 * MiB, 5 * MiB - 1, id="last-byte"),
    ],
)
def test_wrong_bytes_are_cut_off_before_the_client_has_them_all(
    client: httpx.Client,
    upstream: ScriptedRegistry,
    hub: MeasuredMetaHub,
    size: int,
    corrupt_at: int,
):
    blob = upstream.add_blob(Blob(os.urandom(size)))
    blob.corrupt_at = corrupt_at
    before = value(scrape(hub.url), "metahub_digest_mismatches_total")

    received, ended = download(client, blob_path(blob))

    assert isinstance(ended, httpx.RemoteProtocolError)
    assert len(received) < size
    assert value(scrape(hub.url), "metahub_digest_mismatches_total") == before + 1
    assert f"blob {blob.digest} that do not match it" in hub.log_path.read_text()


def test_range_is_forwarded_to_the_upstream(client: httpx.Client, upstream: ScriptedRegistry):
    blob = upstream.add_blob(Blob(os.urandom(2 * MiB)))
    path = blob_path(blob, "blobs/range")

    window = client.get(path, headers={"Range": "bytes=1000-1999"})
    suffix = client.get(path, headers={"Range": "bytes=-300"})
    beyond = client.get(path, headers={"Range": f"bytes={blob.size}-"})

    assert window.status_code == 206
    assert window.headers["content-range"] == f"bytes 1000-1999/{blob.size}"
    assert window.content == blob.content()[1000:2000]
    assert suffix.status_code == 206
    assert suffix.content == blob.content()[-300:]
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{blob.size}"
    ranges = [seen.headers.get("Range") for seen in upstream.requests("GET", path)]
    assert ranges == ["bytes=1000-1999", "bytes=-300", f"bytes={blob.size}-"]
    assert upstream.sent[path] == 1000 + 300  # only the windows crossed the wire


def test_range_is_cut_out_here_when_the_upstream_ignores_it(
    client: httpx.Client, upstream: ScriptedRegistry
):
    blob = upstream.add_blob(Blob(os.urandom(2 * MiB)))
    upstream.honour_range = False
    try:
        window = client.get(blob_path(blob), headers={"Range": "bytes=1048570-1048589"})
    finally:
        upstream.honour_range = True

    assert window.status_code == 206
    assert window.headers["content-range"] == f"bytes 1048570-1048589/{blob.size}"
    assert window.content == blob.content()[1048570:1048590]


def test_redirects_are_followed_without_the_upstream_credentials(
    client: httpx.Client, upstream: ScriptedRegistry, cdn: ScriptedRegistry, hub: MeasuredMetaHub
):
    blob = Blob(os.urandom(MiB))
    cdn.add_blob(blob)
    upstream.add_blob(Blob(blob.block, redirect_to=cdn.url))
    path = blob_path(blob, "blobs/redirected")
    before = scrape(hub.url)

    received, ended = download(client, path)

    assert ended is None
    assert received == blob.content()
    (asked,) = upstream.requests("GET", path)
    assert asked.headers["Authorization"].startswith("Basic ")
    (followed,) = cdn.requests("GET", path)
    assert "Authorization" not in followed.headers
    assert cdn.sent[path] == blob.size
    after = scrape(hub.url)
    for outcome in ("307", "200"):  # both requests count as upstream requests
        labels = {"upstream": urlsplit(upstream.url).netloc, "method": "GET", "outcome": outcome}
        assert value(after, UPSTREAM, **labels) == value(before, UPSTREAM, **labels) + 1


def test_a_range_reaches_the_redirect_target_too(
    client: httpx.Client, upstream: ScriptedRegistry, cdn: ScriptedRegistry
):
    blob = Blob(os.urandom(2 * MiB))
    cdn.add_blob(blob)
    upstream.add_blob(Blob(blob.block, redirect_to=cdn.url))
    path = blob_path(blob, "blobs/redirected-range")

    window = client.get(path, headers={"Range": "bytes=1000-1099"})

    assert window.status_code == 206
    assert window.headers["content-range"] == f"bytes 1000-1099/{blob.size}"
    assert window.content == blob.content()[1000:1100]
    (followed,) = cdn.requests("GET", path)
    assert followed.headers.get("Range") == "bytes=1000-1099"
    assert "Authorization" not in followed.headers
    assert cdn.sent[path] == 100


def test_a_slow_reader_holds_back_the_upstream(client: httpx.Client, upstream: ScriptedRegistry):
    """Backpressure: with the client paused, the upstream stops sending long before the end.

    However far the kernel's loopback buffers grow (32 MiB here), two hops hold well under half
    of 256 MiB; without backpressure all of it would cross.
    """
    blob = upstream.add_blob(Blob(os.urandom(MiB), repeat=256))
    path = blob_path(blob, "blobs/paused")
    with client.stream("GET", path) as response:
        first = next(response.iter_raw(MiB))
        sent = settled(lambda: upstream.sent[path])
        assert len(first) > 0
    assert sent < blob.size // 2
    # The client went away: the upstream download stops rather than running to the end.
    assert settled(lambda: upstream.sent[path]) < blob.size // 2


def settled(read: object, quiet: float = 0.5, timeout: float = 20) -> int:
    """The value of `read()` once it has not changed for `quiet` seconds."""
    assert callable(read)
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "never settled"
        time.sleep(0.05)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return int(last)


@pytest.mark.slow  # 1 GiB through a real server, its memory sampled
def test_a_1_gib_blob_streams_in_flat_memory(
    client: httpx.Client, upstream: ScriptedRegistry, hub: MeasuredMetaHub
):
    warm_up = upstream.add_blob(Blob(os.urandom(4 * MiB)))
    assert download(client, blob_path(warm_up))[1] is None
    big = upstream.add_blob(Blob(os.urandom(MiB), repeat=1024))
    received = 0
    baseline = hub.rss()
    with PeakRss(hub) as rss, client.stream("GET", blob_path(big)) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw(MiB):
            received += len(chunk)

    assert received == 1024 * MiB
    assert rss.samples > 10
    assert rss.peak - baseline < 64 * MiB, f"grew by {(rss.peak - baseline) / MiB:.1f} MiB"


def test_unknown_blob_is_blob_unknown(client: httpx.Client):
    missing = "sha256:" + "0" * 64
    response = client.get(f"/v2/blobs/test/blobs/{missing}")
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
