"""The ASGI application: `/v2/` and `/token` on raw ASGI, everything else on Starlette."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.responses import Response as StarletteResponse
from starlette.routing import Mount, Route

from metahub import errors
from metahub.config import Settings
from metahub.hub import Hub
from metahub.logsetup import quiet_cut_responses
from metahub.server.api import create_api, web_error_response
from metahub.server.database import database_unavailable, is_unavailable
from metahub.server.http import Request, Response, StreamResponse, error_response
from metahub.server.observe import Observe
from metahub.server.protocol import MetaHubHttpProtocol
from metahub.server.registry import manifest_from_memory, registry_endpoint
from metahub.server.token import token_endpoint
from metahub.server.ui import create_ui

log = logging.getLogger("metahub.server")
READY_TIMEOUT = 2.0


class MetaHubApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._hub: Hub | None = None
        self.web = Starlette(
            routes=[
                Route("/healthz", _healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", _metrics),
                Mount("/api", app=create_api(lambda: self.hub)),
                Mount("/ui", app=create_ui(lambda: self.hub)),
            ]
        )
        self.web.add_exception_handler(404, _not_found)
        self.web.add_exception_handler(405, _not_allowed)

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("MetaHub has not started")
        return self._hub

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        if path == "/v2" or path.startswith("/v2/") or path == "/token":
            await self._registry(scope, receive, send)
        else:
            await self.web(scope, receive, send)

    def answer_from_memory(self, scope: dict[str, Any]) -> Response | None:
        """A warm manifest request's answer without awaiting anything; None: call the app."""
        hub = self._hub
        if hub is None or not scope["path"].startswith("/v2/"):
            return None
        return manifest_from_memory(Request(scope), hub)

    async def _registry(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = Request(scope)
        response: Response | StreamResponse
        try:
            if request.path == "/token":
                response = await token_endpoint(request, self.hub, receive)
            else:
                response = await registry_endpoint(request, self.hub)
        except errors.RegistryError as exc:
            response = error_response(exc)
        except Exception as exc:
            if is_unavailable(exc):
                unavailable = database_unavailable(exc, self.hub, request.method, request.path)
                response = error_response(unavailable)
            else:
                log.exception("unhandled error on %s %s", request.method, request.path)
                response = error_response(errors.RegistryError("internal server error"))
        try:
            await response.send(send, receive, head=request.method == "HEAD")
        except errors.RegistryError as exc:
            # Headers are out already; closing the connection short is all that is left.
            log.warning("%s %s broke off: %s", request.method, request.path, exc.message)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                quiet_cut_responses()
                try:
                    self._hub = await Hub.start(self.settings)
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._hub is not None:
                    await self._hub.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _readyz(self, request: StarletteRequest) -> StarletteResponse:
        """Ready when the upstream answers, or when the cache can answer without it."""
        upstream = self.hub.upstream
        try:
            await asyncio.wait_for(upstream.ping(), READY_TIMEOUT)
        except (errors.RegistryError, TimeoutError) as exc:
            if upstream.warm:
                return JSONResponse(
                    {
                        "status": "ready",
                        "upstream": "unreachable",
                        "cache": "warm",
                        **self._blob_cache_state(),
                    }
                )
            message = exc.message if isinstance(exc, errors.RegistryError) else "timed out"
            return JSONResponse(
                {"status": "unready", "upstream": upstream.description, "error": message},
                status_code=503,
            )
        return JSONResponse(
            {"status": "ready", "upstream": "reachable", **self._blob_cache_state()}
        )

    def _blob_cache_state(self) -> dict[str, str]:
        """The blob cache's state: degraded while it cannot write and blobs bypass it."""
        cache = self.hub.blobs.cache
        if cache is None:
            return {}
        return {"blob_cache": "degraded" if cache.degraded else "ok"}


def build_app(settings: Settings) -> Observe:
    """The application as served: MetaHub inside its metrics and access-log middleware."""
    MetaHubHttpProtocol.max_connections = settings.server.max_connections
    return Observe(
        MetaHubApp(settings),
        log_format=settings.log.access,
        trusted_proxies=settings.server.trusted_proxies,
        fast_path=settings.server.fast_path,
    )


async def _healthz(request: StarletteRequest) -> StarletteResponse:
    return JSONResponse({"status": "ok"})


async def _metrics(request: StarletteRequest) -> StarletteResponse:
    registry: CollectorRegistry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return StarletteResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def _not_found(request: StarletteRequest, exc: Exception) -> StarletteResponse:
    return web_error_response(errors.NotFound(f"nothing at {request.url.path}"))


async def _not_allowed(request: StarletteRequest, exc: Exception) -> StarletteResponse:
    allowed = getattr(exc, "headers", None) or {}
    message = f"{request.method} is not supported on {request.url.path}"
    return web_error_response(errors.Unsupported(message, headers=allowed))
