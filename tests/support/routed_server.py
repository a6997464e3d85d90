"""An HTTP server on loopback whose every answer the test writes, in the test's own event loop.

Routes are keyed by path and query (`/v2/a/tags/list?last=b`), or by the path alone for any
query; each is a function of the request. Every request is recorded with its headers, so a
test can check what reached whom (which server got an `Authorization`, how often a token was
fetched).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiohttp import web

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]


class RoutedServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, path_qs: str, answer: Route) -> None:
        self.routes[path_qs] = answer

    def answer(self, path_qs: str, status: int = 200, **kwargs: object) -> None:
        """A fixed answer: web.Response(status=..., **kwargs) every time."""

        async def fixed(_request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, **kwargs)  # type: ignore[arg-type]

        self.route(path_qs, fixed)

    def authorizations(self, path_qs: str | None = None) -> list[str | None]:
        """The Authorization header of each request (for `path_qs`), None where absent."""
        return [
            seen.headers.get("Authorization")
            for seen in self.seen
            if path_qs is None or seen.path_qs == path_qs
        ]

    def count(self, path_qs: str) -> int:
        return sum(1 for seen in self.seen if seen.path_qs == path_qs)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers)))
        route = self.routes.get(request.path_qs) or self.routes.get(request.path)
        if route is None:
            return web.json_response({"errors": [{"code": "NOT_FOUND"}]}, status=404)
        return await route(request)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        await web.SockSite(self._runner, listener).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
