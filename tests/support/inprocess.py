"""MetaHub in this process: the app `metahub serve` builds, with its lifespan, and no sockets.

The fast tier's way to check what the API, the UI and the registry answer: the same config file,
the same `build_app`, a real SQLite file, the same start-up and shut-down, but requests go to
the ASGI app directly instead of through uvicorn. Tests of the HTTP layer itself (workers,
keep-alive, real clients) keep using `MetaHubServer` in a subprocess.

The app runs on an event loop in a thread of its own (an anyio blocking portal), so plain
synchronous `httpx.Client`s can talk to it, as they would to a server; every request of every
client goes to that one loop, where the hub's database engine and upstream sessions live.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
import yaml
from anyio.from_thread import BlockingPortal, start_blocking_portal

from metahub.config import load_config
from metahub.server.app import build_app
from tests.support.metahub_server import create_admin

# Requests carry this Host: links and realms the app builds name it, as they would a server.
HOST = "metahub.test"
CLIENT_ADDRESS = "127.0.0.1"


class _PortalTransport(httpx.BaseTransport):
    """Hands each request to the ASGI app on the portal's loop and waits for the whole answer."""

    def __init__(self, app: Any, portal: BlockingPortal, address: str) -> None:
        self._asgi = httpx.ASGITransport(app=app, client=(address, 40000))
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        return self._portal.call(self._handle, request)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        response = await self._asgi.handle_async_request(request)
        body = await response.aread()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(body),
            extensions=response.extensions,
        )


class _Lifespan:
    """Drives the ASGI lifespan protocol, as uvicorn does: start-up, then shut-down."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _exchange(self, message: str) -> None:
        await self._to_app.put({"type": message})
        assert self._task is not None
        answer = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({answer, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            answer.cancel()
            self._task.result()  # raises what the app raised
            raise RuntimeError(f"the app returned without answering {message}")
        reply = answer.result()
        if reply["type"] != f"{message}.complete":
            raise RuntimeError(f"{message} failed: {reply.get('message', reply)}")

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(self._app(scope, self._to_app.get, self._from_app.put))
        await self._exchange("lifespan.startup")

    async def shutdown(self) -> None:
        await self._exchange("lifespan.shutdown")
        assert self._task is not None
        await self._task


class InProcessHub:
    """MetaHub built from a config dict, like `MetaHubServer`, but in this process.

    `client()` gives an `httpx.Client` on it; `url` and `host` are what requests are sent to.
    """

    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        self.tmp = tmp
        self.config = {"data_dir": str(tmp / "data"), **config}
        self.config_path = tmp / "metahub.yaml"
        self.host = HOST
        self.url = f"http://{HOST}"
        self._stack = contextlib.ExitStack()
        self._app: Any = None
        self._portal: BlockingPortal | None = None

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        # What `metahub serve` does in each worker: load the file, build the app, run its lifespan.
        self._app = build_app(load_config(self.config_path))
        with contextlib.ExitStack() as stack:
            portal = stack.enter_context(start_blocking_portal())
            lifespan = portal.call(_Lifespan, self._app)
            portal.call(lifespan.startup)
            stack.callback(portal.call, lifespan.shutdown)
            self._portal = portal
            self._stack = stack.pop_all()

    def stop(self) -> None:
        self._portal = None
        self._stack.close()

    def client(self, *, address: str = CLIENT_ADDRESS, **options: Any) -> httpx.Client:
        """A client of this hub; `address` is the client address the app sees."""
        if self._portal is None:
            raise RuntimeError("the hub is not started")
        options.setdefault("base_url", self.url)
        transport = _PortalTransport(self._app, self._portal, address)
        return httpx.Client(transport=transport, **options)

    def create_admin(self, login: str, password: str) -> None:
        """`metahub admin create` on this hub's own config and database."""
        create_admin(self.config_path, login, password)

    def __enter__(self) -> InProcessHub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
