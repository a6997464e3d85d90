"""The HTTP protocol MetaHub serves with: small writes of one event-loop turn leave together.

The rules are checked on a transport that records what reaches it; the effect on the wire with
a real `metahub serve` (one worker and two): pipelined requests answered in order, a response
that closes the connection arrives whole, HEAD carries no body, and a blob larger than what is
held back streams intact.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metahub.oci.layout_writer import LayoutWriter
from metahub.server.protocol import HOLD_LIMIT, CoalescingTransport
from tests.support.metahub_server import MetaHubServer
from tests.support.oci import OCI_MANIFEST


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else default


async def settle() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_small_writes_of_one_turn_leave_in_one_write() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b'{"schemaVersion":2}')
    assert inner.writes == []
    await settle()
    assert inner.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"schemaVersion":2}']


async def test_a_large_write_follows_what_was_held_in_order() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    chunk = b"x" * (HOLD_LIMIT + 1)
    transport.write(b"head")
    transport.write(chunk)
    assert inner.writes == [b"head", chunk]
    transport.write(chunk)  # nothing held: straight through
    assert inner.writes == [b"head", chunk, chunk]
    await settle()
    assert inner.writes == [b"head", chunk, chunk]


async def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, loop)
    transport.write(b"last answer")
    transport.close()
    assert inner.writes == [b"last answer"] and inner.closed
    await settle()
    assert inner.writes == [b"last answer"]

    inner = RecordingTransport()
    transport = CoalescingTransport(inner, loop)
    transport.write(b"never sent")
    transport.abort()
    await settle()
    assert inner.writes == [] and inner.aborted


async def test_other_calls_reach_the_transport() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1234)
    assert transport.is_closing() is False


# -- on the wire ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """One image with a 1 MiB layer (larger than what is held back) under `wire/app:latest`."""
    path = tmp_path_factory.mktemp("protocol-layout")
    writer = LayoutWriter(path)
    layer = bytes(range(256)) * 4096
    layer_descriptor = writer.add_blob(layer, "application/vnd.oci.image.layer.v1.tar")
    config = writer.add_json({"architecture": "amd64", "os": "linux"}, "application/json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [layer_descriptor],
    }
    writer.tag("wire/app:latest", writer.add_json(manifest, OCI_MANIFEST))
    writer.save()
    return path, layer


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    layout: tuple[Path, bytes],
) -> Iterator[MetaHubServer]:
    work = tmp_path_factory.mktemp("protocol-hub")
    config = {"upstream": {"path": str(layout[0])}, "anonymous": {"unfiltered": True}}
    with MetaHubServer(work, config, workers=request.param) as server:
        yield server


def exchange(hub: MetaHubServer, raw: bytes, *, until_closed: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", hub.port), timeout=20) as sock:
        sock.sendall(raw)
        if not until_closed:
            sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
    return bytes(received)


def split_responses(data: bytes) -> list[tuple[bytes, dict[str, str], bytes]]:
    """(status line, headers, body) of each response, bodies cut by Content-Length."""
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        responses.append((status.encode(), headers, rest[:length]))
        data = rest[length:]
    return responses


def request(path: str, method: str = "GET", *, close: bool = False) -> bytes:
    headers = ["Host: metahub", f"Accept: {OCI_MANIFEST}"]
    if close:
        headers.append("Connection: close")
    return (f"{method} {path} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode()


def test_pipelined_requests_are_answered_whole_and_in_order(hub: MetaHubServer) -> None:
    raw = (
        request("/v2/wire/app/manifests/latest")
        + request("/v2/wire/app/tags/list")
        + request("/v2/wire/app/manifests/nothing", close=True)
    )
    responses = split_responses(exchange(hub, raw))
    assert [status.split()[1] for status, _, _ in responses] == [b"200", b"200", b"404"]
    manifest, tags, missing = responses
    digest = manifest[1]["docker-content-digest"]
    assert digest == "sha256:" + hashlib.sha256(manifest[2]).hexdigest()
    assert tags[2] == b'{"name":"wire/app","tags":["latest"]}'
    assert b"MANIFEST_UNKNOWN" in missing[2]


def test_head_answers_carry_no_body(hub: MetaHubServer) -> None:
    raw = request("/v2/wire/app/manifests/latest", "HEAD", close=True)
    data = exchange(hub, raw)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: " in head.lower()
    assert body == b""


def test_a_blob_larger_than_what_is_held_streams_intact(
    hub: MetaHubServer, layout: tuple[Path, bytes]
) -> None:
    layer = layout[1]
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    data = exchange(hub, request(f"/v2/wire/app/blobs/{digest}", close=True))
    ((status, headers, body),) = split_responses(data)
    assert status.split()[1] == b"200"
    assert int(headers["content-length"]) == len(layer) > HOLD_LIMIT
    assert body == layer
