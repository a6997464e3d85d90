"""Pure ASGI middleware: request metrics and the access log, with no per-request objects kept."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from metahub import metrics
from metahub.cache.lru import remember
from metahub.server.accesslog import LOGGER_NAME, UPSTREAM_SCOPE_KEY, AccessLog, escaped
from metahub.server.http import Response
from metahub.server.origin import behind_proxies

access_log = logging.getLogger(LOGGER_NAME)  # its level says whether access lines are written

ASGIApp = Any


_V2_ROUTES = (
    ("/blobs/uploads", "upload"),
    ("/manifests/", "manifest"),
    ("/blobs/", "blob"),
    ("/tags/list", "tags"),
    ("/referrers/", "referrers"),
)
_TOP_ROUTES = frozenset({"/token", "/metrics", "/healthz", "/readyz"})
_MAX_SERIES = 1024


def route_of(path: str) -> str:
    """A small fixed set of labels, so metrics stay bounded whatever clients ask for."""
    if path.startswith("/v2/"):
        if path == "/v2/":
            return "ping"
        for marker, label in _V2_ROUTES:
            if marker in path:
                return label
        return "other"
    if path in _TOP_ROUTES:
        return path[1:]
    return "api" if path.startswith("/api/") else "other"


# The access lines' remembered parts: at most this many, for paths of at most this length.
_MAX_LINE_PARTS = 256
_LINE_PARTS_PATH_LIMIT = 1024


def _line_parts(
    address: str, method: str, path: str, status: int, sent: int, upstream: str | None
) -> tuple[str, str]:
    """A plain access line around its duration: `<client> "<method> <path>" <status> <bytes>`,
    and ` upstream=<name>` when a registry request was routed."""
    head = f'{escaped(address)} "{escaped(method)} {escaped(path)}" {status} {sent} '
    # A configured registry name: nothing to escape.
    return head, f" upstream={upstream}" if upstream is not None else ""


class _Series:
    """The metric series of one (route, method, status): labels() looked up once, not per hit."""

    __slots__ = ("bytes", "latency", "requests")

    def __init__(self, route: str, method: str, status: str) -> None:
        self.requests = metrics.REQUESTS.labels(route, method, status)
        self.latency = metrics.LATENCY.labels(route)
        self.bytes = metrics.BYTES_SERVED.labels(route)


class Observe:
    def __init__(
        self,
        app: ASGIApp,
        *,
        log_format: str = "plain",
        trusted_proxies: tuple[str, ...] = (),
        fast_path: bool = False,
    ) -> None:
        self.app = app
        # Whether the HTTP protocol may take warm answers from answer_from_memory.
        self.fast_path = fast_path
        self.trusted_proxies = trusted_proxies
        self.log_format = log_format
        # JSON lines go out bare, so any JSON-lines reader takes them; plain ones carry the
        # application log's prefix.
        self.access = AccessLog(prefixed=log_format != "json")
        # Bounded: route labels are a fixed set, methods and statuses few in practice.
        self._series: dict[tuple[str, str, int], _Series] = {}
        # A plain line's text before and after its duration, by what it is made of: warm pulls
        # log the same request again and again, and escaping each field is a tenth of the line.
        self._line_parts: dict[tuple[str, str, str, int, int, str | None], tuple[str, str]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._flushing_at_shutdown(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.trusted_proxies:
            # The client as its proxy saw it, for the log, login limits and all else.
            scope = behind_proxies(scope, self.trusted_proxies)
        start = time.perf_counter()
        status = 0
        sent = 0

        async def observed_send(message: dict[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.zerocopy":
                sent += message.get("count") or 0
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self._observed(scope, status, sent, time.perf_counter() - start)

    def answer_from_memory(
        self, scope: dict[str, Any], render: Callable[[Response], bytes | None]
    ) -> bytes | None:
        """The app's answer without an ASGI round, as `render` writes it, counted and logged as
        any other; None, counting nothing, when the app must be called (server/protocol.py
        asks before it starts one)."""
        if not self.fast_path:
            return None
        if self.trusted_proxies:
            scope = behind_proxies(scope, self.trusted_proxies)
        start = time.perf_counter()
        answer = getattr(self.app, "answer_from_memory", None)
        response: Response | None = answer(scope) if answer is not None else None
        data = render(response) if response is not None else None
        if response is not None and data is not None:
            sent = 0 if scope["method"] == "HEAD" else len(response.body)
            self._observed(scope, response.status, sent, time.perf_counter() - start)
        return data

    def _observed(self, scope: dict[str, Any], status: int, sent: int, elapsed: float) -> None:
        path = scope["path"]
        method = scope["method"]
        route = route_of(path)
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= _MAX_SERIES:
                self._series.clear()
            series = self._series[key] = _Series(route, method, str(status or 500))
        metrics.count(series.requests)
        metrics.observe(series.latency, elapsed)
        metrics.count(series.bytes, sent)
        if self.log_format != "off" and access_log.isEnabledFor(logging.INFO):
            self._log(scope, method, status, sent, elapsed)

    def _flushing_at_shutdown(self, send: Any) -> Any:
        """Workers of `--workers N` end without running atexit: flush when the app stops."""

        async def flushing_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                self.access.flush()
            await send(message)

        return flushing_send

    def _log(
        self, scope: dict[str, Any], method: str, status: int, sent: int, elapsed: float
    ) -> None:
        client = scope.get("client")
        address = client[0] if client else "-"
        path = scope["path"]
        upstream = scope.get(UPSTREAM_SCOPE_KEY)  # set once a registry request is routed
        if self.log_format == "json":
            record = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "client": address,
                "method": method,
                "path": path,
                "status": status,
                "bytes": sent,
                "duration_ms": round(elapsed * 1000, 3),
            }
            if upstream is not None:
                record["upstream"] = upstream
            self.access.write(orjson.dumps(record).decode())
        else:
            key = (address, method, path, status, sent, upstream)
            parts = self._line_parts.get(key)
            if parts is None:
                parts = _line_parts(*key)
                if len(path) <= _LINE_PARTS_PATH_LIMIT:  # long paths are rare: not kept
                    remember(self._line_parts, key, parts, _MAX_LINE_PARTS)
            self.access.write(f"{parts[0]}{elapsed * 1000:.1f}ms{parts[1]}")
