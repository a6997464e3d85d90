"""An upstream registry that misbehaves on purpose: every oddity is a clear error naming it.

Shapes of JSON and headers the upstream gets wrong are a 502, never a traceback; a body that
trickles in is a 504 once it falls below the minimum rate; a redirect goes only to the
upstream's own origin or to the hosts its settings allow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from metahub import errors
from metahub.client.redirects import DEFAULT_REDIRECT_HOSTS, RedirectPolicy
from metahub.client.retry import RetryPolicy
from metahub.upstream.base import ByteRange
from metahub.upstream.registry import RegistryUpstream, _content_length
from tests.support.routed_server import RoutedServer

DIGEST = "sha256:" + "a" * 64
BLOB = f"/v2/a/blobs/{DIGEST}"
MANIFEST = "/v2/a/manifests/latest"


@pytest.fixture
async def registry() -> AsyncIterator[RoutedServer]:
    async with RoutedServer() as server:
        yield server


@pytest.fixture
async def other() -> AsyncIterator[RoutedServer]:
    """Another service on loopback: same host, another port."""
    async with RoutedServer() as server:
        yield server


def upstream_of(server: RoutedServer, **options: object) -> RegistryUpstream:
    return RegistryUpstream(
        server.url,
        retry=RetryPolicy(retries=0),
        **options,  # type: ignore[arg-type]
    )


async def read_all(upstream: RegistryUpstream, byte_range: ByteRange | None = None) -> bytes:
    blob = await upstream.open_blob("a", DIGEST, byte_range)
    data = bytearray()
    try:
        async for chunk in blob.chunks:
            data += chunk
    finally:
        await blob.close()
    return bytes(data)


def names(error: errors.RegistryError, *words: str) -> None:
    for word in words:
        assert word in error.message, error.message


# -- JSON of the wrong shape ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"[1,2,3]", b'{"tags": "x"}', b'{"tags": [1]}', b'"tags"', b'{"tags": {"a": 1}}']
)
async def test_a_tag_list_of_the_wrong_shape_is_a_502(registry: RoutedServer, body: bytes) -> None:
    registry.answer("/v2/a/tags/list", body=body, content_type="application/json")
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await upstream.tags("a")
    finally:
        await upstream.close()
    assert caught.value.status == 502
    names(caught.value, registry.url, "/v2/a/tags/list")


async def test_an_empty_repository_s_null_tags_are_no_tags(registry: RoutedServer) -> None:
    registry.answer("/v2/a/tags/list", body=b'{"name": "a", "tags": null}')
    upstream = upstream_of(registry)
    try:
        assert await upstream.tags("a") == []
    finally:
        await upstream.close()


def bearer_challenge(realm: str) -> web.Response:
    return web.Response(
        status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'}
    )


@pytest.mark.parametrize(
    "body",
    [
        b"[1]",
        b'"token"',
        b"null",
        b'{"token": "t", "expires_in": "soon"}',
        b'{"token": "t", "expires_in": [60]}',
    ],
)
async def test_a_token_answer_of_the_wrong_shape_is_a_502(
    registry: RoutedServer, body: bytes
) -> None:
    async def challenge(_request: web.Request) -> web.StreamResponse:
        return bearer_challenge(f"{registry.url}/token")

    registry.route(MANIFEST, challenge)
    registry.answer("/token", body=body, content_type="application/json")
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await upstream.get_manifest("a", "latest")
    finally:
        await upstream.close()
    assert caught.value.status == 502
    names(caught.value, registry.url)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"a string"', b""])
async def test_a_manifest_that_is_not_a_json_object_is_a_502(
    registry: RoutedServer, body: bytes
) -> None:
    registry.answer(
        MANIFEST, body=body, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    )
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await upstream.get_manifest("a", "latest")
    finally:
        await upstream.close()
    names(caught.value, registry.url, "a:latest")


async def test_referrers_that_are_not_a_json_object_are_a_502(registry: RoutedServer) -> None:
    registry.answer(f"/v2/a/referrers/{DIGEST}", body=b"<html>", content_type="text/html")
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await upstream.referrers("a", DIGEST, None)
    finally:
        await upstream.close()
    names(caught.value, registry.url, DIGEST)


# -- headers that do not add up ------------------------------------------------------------


def sized_blob(content_range: str, status: int = 206, body: bytes = b"0123456789") -> web.Response:
    return web.Response(status=status, body=body, headers={"Content-Range": content_range})


@pytest.mark.parametrize(
    ("byte_range", "content_range"),
    [
        (ByteRange(0, 9), "bytes 5-14/100"),  # not the bytes asked for
        (ByteRange(0, 9), "bytes 9-0/100"),  # backwards
        (ByteRange(0, 9), "bytes 0-9/5"),  # beyond its own total
        (ByteRange(0, 9), "bytes 0-9/*"),
        (ByteRange(0, 9), "octets 0-9/100"),
        (None, "bytes 0-9/100"),  # a part when the whole was asked for
    ],
)
async def test_a_content_range_that_does_not_match_the_request_is_a_502(
    registry: RoutedServer, byte_range: ByteRange | None, content_range: str
) -> None:
    async def answer(_request: web.Request) -> web.StreamResponse:
        return sized_blob(content_range)

    registry.route(BLOB, answer)
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await read_all(upstream, byte_range)
    finally:
        await upstream.close()
    assert caught.value.status == 502
    names(caught.value, registry.url, repr(content_range))


async def test_a_content_range_that_matches_is_served(registry: RoutedServer) -> None:
    async def answer(_request: web.Request) -> web.StreamResponse:
        return sized_blob("bytes 10-19/100")

    registry.route(BLOB, answer)
    upstream = upstream_of(registry)
    try:
        assert await read_all(upstream, ByteRange(10, 19)) == b"0123456789"
    finally:
        await upstream.close()


@pytest.mark.parametrize("length", ["ten", "1e3", "-5", "\u0661\u0660"])
async def test_a_content_length_that_is_not_a_number_is_a_502(
    registry: RoutedServer, length: str
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": length})
        response.force_close()
        await response.prepare(request)
        return response

    registry.route(BLOB, answer)
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await upstream.blob_size("a", DIGEST)
    finally:
        await upstream.close()
    names(caught.value, registry.url)


@pytest.mark.parametrize("length", ["\u00b2", "\u0661\u0660", "1_000", " ", "+1", "0x10"])
def test_only_ascii_digits_are_a_content_length(length: str) -> None:
    assert _content_length({"Content-Length": length}) is None


# -- bodies that break off or trickle ------------------------------------------------------


async def test_a_body_that_breaks_off_names_the_upstream_and_the_path(
    registry: RoutedServer,
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b"0123456789")
        assert request.transport is not None
        request.transport.close()
        return response

    registry.route(BLOB, answer)
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await read_all(upstream)
    finally:
        await upstream.close()
    names(caught.value, registry.url, BLOB)


def trickle(count: int, every: float) -> web.StreamResponse:
    """`count` bytes, one every `every` seconds: each read gets its byte in time."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(count)})
        await response.prepare(request)
        for _ in range(count):
            await response.write(b"x")
            await asyncio.sleep(every)
        return response

    return answer  # type: ignore[return-value]


async def test_a_blob_slower_than_the_minimum_rate_is_a_504(registry: RoutedServer) -> None:
    registry.route(BLOB, trickle(1000, 0.05))  # ~20 bytes/s
    upstream = upstream_of(registry, read_timeout=5, min_rate=1000, min_rate_window=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(errors.UpstreamTimeout) as caught:
            await read_all(upstream)
    finally:
        await upstream.close()
    assert time.monotonic() - started < 3
    assert caught.value.status == 504
    names(caught.value, registry.url, BLOB)


async def test_a_slow_reader_is_not_taken_for_a_slow_upstream(registry: RoutedServer) -> None:
    registry.answer(BLOB, body=b"x" * 4096)
    upstream = upstream_of(registry, min_rate=1000, min_rate_window=0.2)
    blob = await upstream.open_blob("a", DIGEST)
    received = 0
    try:
        async for chunk in blob.chunks:
            received += len(chunk)
            await asyncio.sleep(0.5)  # the reader, not the upstream, takes its time
    finally:
        await blob.close()
        await upstream.close()
    assert received == 4096


async def test_a_manifest_that_trickles_in_ends_at_the_request_timeout(
    registry: RoutedServer,
) -> None:
    registry.route(MANIFEST, trickle(1000, 0.05))
    upstream = upstream_of(registry, read_timeout=5, min_rate=0, request_timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(errors.UpstreamTimeout) as caught:
            await upstream.get_manifest("a", "latest")
    finally:
        await upstream.close()
    assert time.monotonic() - started < 3
    names(caught.value, registry.url, MANIFEST)


# -- redirects -----------------------------------------------------------------------------


def redirect_to(url: str) -> web.StreamResponse:
    async def answer(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": url})

    return answer  # type: ignore[return-value]


async def test_a_redirect_to_another_loopback_service_is_refused(
    registry: RoutedServer, other: RoutedServer
) -> None:
    registry.route(BLOB, redirect_to(f"{other.url}/secret"))
    other.answer("/secret", body=b"someone else's bytes")
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await read_all(upstream, ByteRange(0, 3))
    finally:
        await upstream.close()
    assert caught.value.status == 502
    names(caught.value, registry.url, f"127.0.0.1:{other.port}")
    assert other.seen == []


async def test_a_redirect_to_an_allowed_host_is_followed(
    registry: RoutedServer, other: RoutedServer
) -> None:
    registry.route(BLOB, redirect_to(f"{other.url}/blob"))
    other.answer("/blob", body=b"the blob")
    upstream = upstream_of(registry, redirect_hosts=[f"127.0.0.1:{other.port}"])
    try:
        assert await read_all(upstream) == b"the blob"
    finally:
        await upstream.close()


async def test_a_redirect_within_the_upstream_is_followed(registry: RoutedServer) -> None:
    registry.route(BLOB, redirect_to("/storage/blob"))
    registry.answer("/storage/blob", body=b"the blob")
    upstream = upstream_of(registry)
    try:
        assert await read_all(upstream) == b"the blob"
    finally:
        await upstream.close()


PUBLIC = "https://registry.example.org"


@pytest.mark.parametrize(
    ("registry_url", "target", "hosts", "allowed"),
    [
        (PUBLIC, "https://registry.example.org/v2/x", (), True),  # its own origin
        (PUBLIC, "http://registry.example.org/v2/x", (), False),  # not down to plain HTTP
        (PUBLIC, "https://bucket.s3.amazonaws.com/x", DEFAULT_REDIRECT_HOSTS, True),
        (PUBLIC, "https://production.cloudflare.docker.com/x", DEFAULT_REDIRECT_HOSTS, True),
        (PUBLIC, "https://evil.example.com/x", DEFAULT_REDIRECT_HOSTS, False),
        (PUBLIC, "https://s3.amazonaws.com.evil.example/x", DEFAULT_REDIRECT_HOSTS, False),
        (PUBLIC, "https://cdn.example.net:8443/x", ("cdn.example.net",), True),
        (PUBLIC, "https://cdn.example.net:8443/x", ("cdn.example.net:443",), False),
        # Never from a public upstream to this machine or its network, whatever is allowed.
        (PUBLIC, "http://127.0.0.1:9000/x", ("*",), False),
        (PUBLIC, "http://localhost/x", ("*",), False),
        (PUBLIC, "http://10.0.0.5/x", ("*",), False),
        (PUBLIC, "http://169.254.169.254/latest/meta-data", ("*",), False),
        (PUBLIC, "http://[::1]:80/x", ("*",), False),
        (PUBLIC, "http://[fe80::1]/x", ("*",), False),
        (PUBLIC, "file:///etc/passwd", ("*",), False),
        # An upstream on this machine may name others here, when they are allowed.
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000/x", (), True),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5001/x", (), False),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5001/x", ("127.0.0.1:5001",), True),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5001/x", ("127.0.0.1",), True),
        ("http://10.0.0.2:5000", "http://10.0.0.3/x", ("10.0.0.*",), True),
    ],
)
def test_which_redirects_are_allowed(
    registry_url: str, target: str, hosts: tuple[str, ...], allowed: bool
) -> None:
    assert RedirectPolicy(hosts).allows(registry_url, target) is allowed


# -- URLs that do not parse ----------------------------------------------------------------


@pytest.mark.parametrize("location", ["http://[::1", "http://storage:99999/x", "http://[bad]/"])
async def test_a_redirect_to_a_url_that_does_not_parse_is_a_502(
    registry: RoutedServer, location: str
) -> None:
    registry.route(BLOB, redirect_to(location))
    upstream = upstream_of(registry, redirect_hosts=["*"])
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await read_all(upstream)
    finally:
        await upstream.close()
    names(caught.value, registry.url, repr(location))


async def test_a_next_page_that_does_not_parse_is_a_502(registry: RoutedServer) -> None:
    link = "http://[::1/v2/a/tags/list?last=b"
    registry.answer(
        "/v2/a/tags/list", body=b'{"tags": ["a"]}', headers={"Link": f'<{link}>; rel="next"'}
    )
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await upstream.tags("a")
    finally:
        await upstream.close()
    names(caught.value, registry.url, repr(link))


async def test_a_token_realm_that_does_not_parse_is_a_502(registry: RoutedServer) -> None:
    async def challenge(_request: web.Request) -> web.StreamResponse:
        return bearer_challenge("http://[bad]/token")

    registry.route(MANIFEST, challenge)
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await upstream.get_manifest("a", "latest")
    finally:
        await upstream.close()
    names(caught.value, registry.url, "http://[bad]/token")


@pytest.mark.parametrize("body", [b'{"errors": 5}', b'{"errors": [{"code": []}]}', b"[]"])
async def test_an_error_body_of_the_wrong_shape_still_gives_the_status(
    registry: RoutedServer, body: bytes
) -> None:
    registry.answer("/v2/a/tags/list", status=400, body=body, content_type="application/json")
    upstream = upstream_of(registry)
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await upstream.tags("a")
    finally:
        await upstream.close()
    names(caught.value, registry.url, "400")


async def test_a_manifest_head_with_a_digest_that_does_not_parse_is_no_head(
    registry: RoutedServer,
) -> None:
    registry.answer(
        MANIFEST,
        body=b"{}",
        headers={"Docker-Content-Digest": "md5:../../etc", "Content-Type": "application/json"},
    )
    upstream = upstream_of(registry)
    try:
        assert await upstream.head_manifest("a", "latest") is None  # the GET decides instead
    finally:
        await upstream.close()
