"""Limits on a request's head, enforced by the HTTP protocol before any application code runs.

A server with MetaHub's protocol and a small ASGI app runs in this process on loopback; raw
sockets play the hostile clients: thousands of header lines, one huge header, a client that
drips its headers, and a well-behaved request that must not wait behind them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import uvicorn

from metahub.server import protocol
from metahub.server.protocol import MAX_HEADER_BYTES, MAX_HEADER_FIELDS, MetaHubHttpProtocol


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = orjson.dumps({"headers": len(scope["headers"])})
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def port(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setattr(protocol, "HEADER_TIMEOUT", 0.5)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = int(probe.getsockname()[1])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free,
        http=MetaHubHttpProtocol,
        log_level="error",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield free
    server.should_exit = True
    await task


async def exchange(port: int, raw: bytes, *, pause: float = 0.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def status_and_body(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), orjson.loads(body)


def with_headers(*lines: str) -> bytes:
    return ("GET /v2/ HTTP/1.1\r\nHost: metahub\r\n" + "".join(f"{x}\r\n" for x in lines)).encode()


async def test_an_ordinary_request_passes(port: int) -> None:
    response = await exchange(port, with_headers("Connection: close") + b"\r\n")
    assert status_and_body(response) == (200, {"headers": 2})


async def test_exactly_the_limit_of_fields_passes_and_one_more_is_431(port: int) -> None:
    # Host and Connection count: fill up to the limit with Accept lines.
    fields = ["Connection: close"] + ["Accept: a/b"] * (MAX_HEADER_FIELDS - 2)
    assert status_and_body(await exchange(port, with_headers(*fields) + b"\r\n"))[0] == 200

    response = await exchange(port, with_headers(*fields, "Accept: one/more") + b"\r\n")
    status, body = status_and_body(response)
    assert status == 431
    assert body["errors"][0]["code"] == "UNSUPPORTED"
    assert str(MAX_HEADER_FIELDS) in body["errors"][0]["message"]
    assert b"content-type: application/json" in response.lower()


async def test_one_huge_header_is_431(port: int) -> None:
    raw = with_headers("X-Big: " + "a" * (MAX_HEADER_BYTES + 1), "Connection: close") + b"\r\n"
    assert status_and_body(await exchange(port, raw))[0] == 431


async def test_megabytes_of_accept_lines_are_refused_fast_and_others_are_not_held(
    port: int,
) -> None:
    flood = with_headers(*["Accept: application/vnd.oci.image.manifest.v1+json"] * 80_000)
    started = time.monotonic()
    flooding = asyncio.create_task(exchange(port, flood + b"\r\n"))
    ordinary = await exchange(port, with_headers("Connection: close") + b"\r\n")
    assert status_and_body(ordinary)[0] == 200
    refused = await flooding
    assert time.monotonic() - started < 3
    # The refusal is sent at once; a client still writing may see the connection reset instead.
    assert refused == b"" or status_and_body(refused)[0] == 431


async def test_a_client_dripping_headers_is_cut_off_with_408(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    reading = asyncio.create_task(reader.read())
    writer.write(b"GET /v2/ HTTP/1.1\r\nHost: metahub\r\n")
    try:
        for _ in range(40):  # one header line every 0.1 s, never the blank line
            if reading.done():
                break
            writer.write(b"X-Drip: 1\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
    except ConnectionResetError:
        pass
    response = await asyncio.wait_for(reading, 5)
    writer.close()
    assert time.monotonic() - started < 3
    assert status_and_body(response)[0] == 408


async def test_an_idle_connection_is_closed_without_an_answer(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


async def test_a_malformed_request_gets_a_registry_error_body(port: int) -> None:
    status, body = status_and_body(await exchange(port, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400
    assert body["errors"][0]["code"] == "UNSUPPORTED"


async def test_a_connection_beyond_max_connections_gets_503_and_the_others_are_served(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MetaHubHttpProtocol, "max_connections", 2)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    try:
        status, body = status_and_body(await exchange(port, with_headers() + b"\r\n"))
        assert status == 503
        assert body["errors"][0]["code"] == "UNAVAILABLE"
        assert "2 connections" in body["errors"][0]["message"]
        # A held connection is served as usual.
        reader, writer = held[0]
        writer.write(with_headers("Connection: close") + b"\r\n")
        assert status_and_body(await asyncio.wait_for(reader.read(), 5))[0] == 200
    finally:
        for _, writer in held:
            writer.close()


async def test_max_connections_comes_from_the_settings() -> None:
    from metahub.config import parse_config
    from metahub.server.app import build_app

    try:
        build_app(
            parse_config({"upstream": {"path": "/nonexistent"}, "server": {"max_connections": 7}})
        )
        assert MetaHubHttpProtocol.max_connections == 7
    finally:
        MetaHubHttpProtocol.max_connections = None
