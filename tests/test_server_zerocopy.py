"""The `http.response.zerocopy` extension MetaHub's HTTP protocol offers: a body sent from a file
by `sendfile`, a window of it (Range), between ordinary body messages, to a client that reads
slowly, and to one that goes away part-way.

A real uvicorn server with MetaHub's protocol, on uvloop, in a thread; a tiny ASGI app sends the
messages; the clients are plain sockets and httpx.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from metahub.server.http import ZEROCOPY
from metahub.server.protocol import MetaHubHttpProtocol

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = os.urandom(24 * MiB + 333)
    path = tmp_path_factory.mktemp("zerocopy") / "blob"
    path.write_bytes(data)
    return path, data


def app_for(path: Path) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if ZEROCOPY not in scope.get("extensions", {}):
            body = b"no zerocopy offered"
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        query = dict(part.split("=") for part in scope["query_string"].decode().split("&"))
        offset, count = int(query["offset"]), int(query["count"])
        before, after = b"before:", b":after"
        mixed = scope["path"] == "/mixed"
        length = count + (len(before) + len(after) if mixed else 0)
        headers = [(b"content-length", b"%d" % length)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if mixed:
            await send({"type": "http.response.body", "body": before, "more_body": True})
        fd = os.open(path, os.O_RDONLY)
        try:
            message = {"type": ZEROCOPY, "file": fd, "offset": offset, "count": count}
            await send(message | {"more_body": mixed})
        finally:
            os.close(fd)
        if mixed:
            await send({"type": "http.response.body", "body": after})

    return app


@pytest.fixture(scope="module")
def server(content: tuple[Path, bytes]) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app_for(content[0]),
        host="127.0.0.1",
        port=port,
        http=MetaHubHttpProtocol,
        loop="uvloop",
        lifespan="off",
        log_level="warning",
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(10)


@pytest.mark.parametrize(
    ("offset", "count"),
    [(0, 24 * MiB + 333), (0, 1), (5 * MiB + 7, 3 * MiB), (24 * MiB, 333), (100, 0)],
    ids=["whole", "first-byte", "window", "tail", "nothing"],
)
def test_a_file_window_arrives_byte_exact(
    server: str, content: tuple[Path, bytes], offset: int, count: int
) -> None:
    answer = httpx.get(f"{server}/file?offset={offset}&count={count}", timeout=60)

    assert answer.status_code == 200
    assert answer.content == content[1][offset : offset + count]


def test_a_file_between_body_messages_keeps_its_place(
    server: str, content: tuple[Path, bytes]
) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        first = client.get(f"/mixed?offset=10&count={2 * MiB}")
        again = client.get("/file?offset=0&count=5")  # the same connection, kept alive

    assert first.content == b"before:" + content[1][10 : 10 + 2 * MiB] + b":after"
    assert again.content == content[1][:5]


def test_a_slow_reader_gets_every_byte(server: str, content: tuple[Path, bytes]) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /file?offset=0&count={8 * MiB} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = bytearray()
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        received = bytearray(body)
        while len(received) < 8 * MiB:
            chunk = sock.recv(256 * 1024)
            assert chunk, "the server closed early"
            received += chunk
            if len(received) < MiB:
                time.sleep(0.01)  # slow at first: the server's socket fills and it must wait

    assert head.startswith(b"HTTP/1.1 200")
    assert bytes(received) == content[1][: 8 * MiB]


def test_a_client_that_goes_away_part_way_leaves_the_server_serving(
    server: str, content: tuple[Path, bytes]
) -> None:
    host, port = server.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as sock:
            request = f"GET /file?offset=0&count={24 * MiB} HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(request.encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            # Linger 0: the close is a reset, the server's next sendfile fails at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    answer = httpx.get(f"{server}/file?offset=3&count=10", timeout=30)
    assert answer.content == content[1][3:13]
