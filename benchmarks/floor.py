"""The floor: MetaHub's serving stack forwarding to the upstream with nothing of MetaHub's.

uvicorn with uvloop and httptools, one aiohttp `ClientSession`, a bare ASGI app: a GET is sent
on to the upstream with the client's Accept header and answered with the upstream's status,
Content-Type and bytes. A blob's bytes are hashed with SHA-256 on the way, each chunk sent one
behind, and the last only once the digest matches, as MetaHub's relay does. There is no token,
routing, filtering, store, log line or metric.

The serving benchmark measures it beside MetaHub, against the same upstream in the same run:
its ratio to a direct GET is what this stack costs on the host of the day, and the distance
from it to MetaHub's ratio is what MetaHub's own work costs. `python -m benchmarks.floor
UPSTREAM_URL PORT` runs it.
"""

from __future__ import annotations

import hashlib
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from tests.support.servers import _Daemon, free_port

ROOT = Path(__file__).parent.parent


def app(upstream: str) -> Any:
    """The ASGI app forwarding GETs to `upstream`."""
    session: aiohttp.ClientSession | None = None

    async def forward(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            await receive()  # startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # shutdown
            if session is not None:
                await session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if session is None:
            session = aiohttp.ClientSession(auto_decompress=False)
        accept = [value.decode() for name, value in scope["headers"] if name == b"accept"]
        headers = {"Accept": ", ".join(accept)} if accept else {}
        path = scope["raw_path"].decode()
        async with session.get(upstream + path, headers=headers) as response:
            start = {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.headers.get("Content-Type", "").encode()),
                    (b"content-length", response.headers.get("Content-Length", "0").encode()),
                ],
            }
            if "/blobs/" not in path or response.status != 200:
                body = await response.read()
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(start)
            hasher = hashlib.sha256()
            held = b""
            async for chunk in response.content.iter_any():  # pieces as received, as MetaHub
                hasher.update(chunk)
                if held:
                    await send({"type": "http.response.body", "body": held, "more_body": True})
                held = chunk
            if "sha256:" + hasher.hexdigest() != path.rsplit("/", 1)[1]:
                raise RuntimeError(f"the upstream's bytes do not match {path}")  # cuts it short
            await send({"type": "http.response.body", "body": held})

    return forward


class BareProxy(_Daemon):
    """`python -m benchmarks.floor` in front of `upstream`, on a free loopback port, its log
    and a thorough stop as every server of the tests has (`tests.support.servers._Daemon`)."""

    name = "floor"

    def __init__(self, tmp: Path, upstream: str) -> None:
        super().__init__(tmp)
        self.upstream = upstream
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "benchmarks.floor", self.upstream, str(self.port)]
        self._spawn(argv, self._answers, timeout=20, cwd=ROOT)

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True


def main() -> None:
    upstream, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(
        app(upstream),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
