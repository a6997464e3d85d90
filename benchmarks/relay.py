"""A bare relay for the serving benchmark's blob case: the floor of any Python pass-through here.

The same stack as MetaHub's blob path (uvicorn with uvloop and httptools in front, an aiohttp
client behind, 256 KiB chunks) and nothing else: no routing, authentication, digest check,
metrics or access log. Its throughput shows what relaying bytes through one Python process
costs on this machine, next to what MetaHub's own work adds.

Served by `uvicorn benchmarks.relay:app` with RELAY_UPSTREAM set to the registry's URL.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

CHUNK = 256 * 1024
_session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _session = aiohttp.ClientSession()
                await send({"type": "lifespan.startup.complete"})
            else:
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http" or _session is None:
        return
    async with _session.get(os.environ["RELAY_UPSTREAM"] + scope["path"]) as upstream:
        length = upstream.headers.get("Content-Length", "0").encode()
        headers = [(b"content-length", length)]
        await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
        async for chunk in upstream.content.iter_chunked(CHUNK):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
