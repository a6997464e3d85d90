"""Just enough HTTP on raw ASGI for the registry API's hot path.

The registry routes are the product's hot path (every node of a cluster asks for the same tag at
once), so they skip a framework router and talk ASGI directly; see docs/decisions.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from metahub.errors import RegistryError

Scope = dict[str, Any]
Message = dict[str, Any]
API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")
# The ASGI extension that sends a body from a file (`sendfile`), where the server offers it.
ZEROCOPY = "http.response.zerocopy"
# A scope key for the request's header fields as `Request.headers` has them, made beforehand:
# the protocol makes them once for each request's bytes it remembers (server/protocol.py).
# Shared by every request sent with the same bytes: read, never changed.
HEADER_FIELDS = "metahub.header_fields"


class Request:
    __slots__ = ("_headers", "_query", "method", "path", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self._headers: dict[str, str] | None = scope.get(HEADER_FIELDS)
        self._query: dict[str, list[str]] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Every header field by its lower-case name (made at the first use)."""
        if self._headers is None:
            self._headers = header_fields(self.scope["headers"])
        return self._headers

    def header(self, name: bytes) -> str | None:
        """One field (`name` in lower case) as `headers` has it, without building the rest."""
        if self._headers is not None:
            return self._headers.get(name.decode("latin-1"))
        values = [value.decode("latin-1") for key, value in self.scope["headers"] if key == name]
        if not values:
            return None
        return values[0] if len(values) == 1 else ", ".join(values)

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            raw = self.scope.get("query_string", b"").decode("latin-1")
            self._query = parse_qs(raw, keep_blank_values=True)
        return self._query

    def param(self, name: str) -> str | None:
        if self._query is None and not self.scope.get("query_string"):
            return None  # most requests carry no query: parse_qs would cost the warm path
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def client_address(self) -> str:
        client = self.scope.get("client")
        return str(client[0]) if client else "unknown"


def header_fields(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header names (lower case in ASGI) to values; repeated fields joined with ", ".

    A field sent on several lines means the same as one line listing the values (RFC 9110,
    5.3): docker sends one `Accept` line per manifest type it takes.
    """
    fields: dict[str, list[str]] = {}
    for key, value in raw:
        fields.setdefault(key.decode("latin-1"), []).append(value.decode("latin-1"))
    # Joined once per name: joining as lines arrive copies the growing value every time.
    return {
        name: values[0] if len(values) == 1 else ", ".join(values)
        for name, values in fields.items()
    }


@dataclass(slots=True)
class Response:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Headers already encoded (lower-case names), sent after `headers`: the hot path's way.
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # The protocol's shortcut: this response as last written whole (server/protocol.py).
    written: tuple[object, bool, bytes | None] | None = field(
        default=None, repr=False, compare=False
    )

    def fields(self) -> list[tuple[bytes, bytes]]:
        """The header fields sent, in order: the ASGI path and the protocol's shortcut alike."""
        headers = _encode_headers(self.headers) if self.headers else [API_VERSION]
        headers += self.raw_headers
        headers.append((b"content-length", b"%d" % len(self.body)))
        return headers

    async def send(self, send: Any, receive: Any, *, head: bool) -> None:
        headers = self.fields()
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else self.body})


@dataclass(slots=True)
class StreamResponse:
    """A streamed body of known length; stops reading upstream if the client goes away.

    With `file` (set only where the server offers ZEROCOPY), the body is `length` bytes of that
    file from `offset`, sent by the kernel; `chunks` is then closed unread.
    """

    status: int
    headers: Mapping[str, str]
    length: int
    chunks: AsyncIterator[bytes]
    file: Path | None = None
    offset: int = 0

    async def send(self, send: Any, receive: Any, *, head: bool) -> None:
        headers = _encode_headers(self.headers)
        headers.append((b"content-length", str(self.length).encode()))
        fd = None
        try:
            if self.file is not None and not head:
                # Opened before the head goes out: a file evicted meanwhile is streamed instead
                # (and fails as a stream does), and once open it stays readable to the end.
                with contextlib.suppress(OSError):
                    fd = await asyncio.to_thread(os.open, self.file, os.O_RDONLY)
            await send({"type": "http.response.start", "status": self.status, "headers": headers})
            if head:
                await send({"type": "http.response.body", "body": b""})
                return
            if fd is not None:
                message = {
                    "type": ZEROCOPY,
                    "file": fd,
                    "offset": self.offset,
                    "count": self.length,
                }
                await send(message)
                return
            await self._stream(send, receive)
        finally:
            if fd is not None:
                os.close(fd)
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _stream(self, send: Any, receive: Any) -> None:
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        try:
            async for chunk in self.chunks:
                if disconnected.is_set():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def error_response(error: RegistryError) -> Response:
    status, headers, body = error.rendered()
    return Response(status, headers, body)


def _encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    encoded.append(API_VERSION)
    return encoded
