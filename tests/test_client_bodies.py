"""Bodies read by the registry client: every byte, in order, however the server sends them.

The client hands a body on in the pieces the socket delivered, without joining them; these
servers write bodies with a length and chunked ones (HTTP chunks of every size, some ending
exactly where a read does), and read with and without a minimum rate.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from metahub.client.http import RegistryConnection
from metahub.client.pace import MinimumRate
from tests.support.routed_server import Route, RoutedServer

BLOB = "/v2/a/blobs/sha256:" + "0" * 64


def body(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sent_in_pieces(data: bytes, sizes: list[int], *, chunked: bool) -> Route:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(data)
        await response.prepare(request)
        offset = 0
        for size in sizes:
            await response.write(data[offset : offset + size])
            offset += size
            await asyncio.sleep(0)  # each write its own segment, as often as the loop allows
        await response.write(data[offset:])
        await response.write_eof()
        return response

    return answer


@pytest.fixture
async def registry() -> AsyncIterator[RoutedServer]:
    async with RoutedServer() as server:
        yield server


async def streamed(server: RoutedServer, rate: MinimumRate | None, **window: int) -> bytes:
    async with RegistryConnection(
        server.url, description="registry under test", min_rate=rate
    ) as connection:
        response = await connection.request("GET", BLOB)
        assert response.status == 200
        received = bytearray()
        async for chunk in connection.stream(response, **window):
            assert chunk, "an empty chunk is never handed on"
            received += chunk
        return bytes(received)


RATES = [None, MinimumRate(1024, 30.0)]


@pytest.mark.parametrize("rate", RATES, ids=["no minimum rate", "minimum rate"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_every_byte_arrives_in_order(
    registry: RoutedServer, rate: MinimumRate | None, chunked: bool
) -> None:
    sizes = [1, 7, 4096, 65536, 1, 300_000, 2, 262_144, 0, 5] * 3
    data = body(sum(sizes) + 1234, seed=len(sizes))
    registry.route(BLOB, sent_in_pieces(data, sizes, chunked=chunked))

    assert await streamed(registry, rate) == data


@pytest.mark.parametrize("rate", RATES, ids=["no minimum rate", "minimum rate"])
async def test_a_window_of_a_chunked_body_is_exactly_those_bytes(
    registry: RoutedServer, rate: MinimumRate | None
) -> None:
    sizes = [3, 65536, 1, 1, 200_000, 17]
    data = body(sum(sizes) + 10, seed=1)
    registry.route(BLOB, sent_in_pieces(data, sizes, chunked=True))

    got = await streamed(registry, rate, skip=65_538, take=150_001)

    assert got == data[65_538 : 65_538 + 150_001]


@pytest.mark.parametrize("rate", RATES, ids=["no minimum rate", "minimum rate"])
async def test_a_manifest_read_whole_is_those_bytes(
    registry: RoutedServer, rate: MinimumRate | None
) -> None:
    data = body(100_000, seed=2)
    registry.route(BLOB, sent_in_pieces(data, [1, 10, 100, 1000, 10_000], chunked=True))
    async with RegistryConnection(
        registry.url, description="registry under test", min_rate=rate
    ) as connection:
        response = await connection.request("GET", BLOB)
        assert await connection.read(response, 200_000) == data


@pytest.mark.parametrize("rate", RATES, ids=["no minimum rate", "minimum rate"])
async def test_a_chunk_whose_end_comes_after_its_bytes_is_not_the_end_of_the_body(
    rate: MinimumRate | None,
) -> None:
    """The client reads a chunk's bytes before the line that ends the chunk has arrived: the
    end of that chunk, reported on its own, must not read as the end of the body."""
    pieces = [b"hello", b" chunked", b" world"]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # the request's head
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:
            writer.write(b"%x\r\n%s" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.05)  # the chunk's bytes are read before its CRLF comes
            writer.write(b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with RegistryConnection(
            f"http://127.0.0.1:{port}", description="registry under test", min_rate=rate
        ) as connection:
            response = await connection.request("GET", BLOB)
            received = [chunk async for chunk in connection.stream(response)]
    finally:
        server.close()
    assert b"".join(received) == b"".join(pieces)
