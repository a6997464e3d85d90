"""uvicorn's HTTP protocol: a response's head and small body in one system call, and limits on
what a client may send before the application sees a request.

uvicorn writes the status line and headers, then the body, each with its own `transport.write`,
and uvloop sends each at once: two `send` system calls for every manifest, which the profile of
warm pulls put at two fifths of the server's CPU (docs/decisions.md). Here small writes made in
one turn of the event loop are joined and sent together at the end of that turn. Large writes
(blob chunks) go out as they come, after anything held back, so streaming and its back-pressure
are unchanged.

A request's head is bounded in fields, bytes and time: without limits one unauthenticated
request with 150,000 `Accept` lines held the event loop for seconds, and connections that drip
header lines stay open for ever. The refusals are registry error bodies, like every other answer.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import (
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
)

from metahub import errors
from metahub.server.http import Response

# The most header fields and bytes (request line included) one request may send: far above what
# docker (about 10 fields, 2 KiB with a token) or any other registry client sends.
MAX_HEADER_FIELDS = 100
MAX_HEADER_BYTES = 64 * 1024
# How long a client may take from a request's first byte (or the connection's start) to the end
# of its headers.
HEADER_TIMEOUT = 10.0

# Writes up to this size are held until the end of the turn; the head of a response and a
# manifest fit, a blob chunk does not.
HOLD_LIMIT = 16 * 1024

# Requests answered from memory whose bytes are remembered, so that the same bytes again (a
# client repeating its warm pull on a kept-alive connection) skip the HTTP parser: at most this
# many, each at most this long.
KNOWN_REQUESTS = 4096
KNOWN_REQUEST_BYTES = 8 * 1024


class CoalescingTransport:
    """A transport whose small writes within one event-loop turn leave in one `write`."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is None:
            if len(data) > HOLD_LIMIT:
                self._transport.write(data)
                return
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        elif len(self._held) + len(data) <= HOLD_LIMIT:
            self._held += data
        else:
            self.flush()
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HeadRefused(Exception):
    """Raised from a parser callback to stop reading a request whose head is refused."""


_STATUS_TEXT = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def refusal(
    status: int, message: str, kind: type[errors.RegistryError] = errors.Unsupported
) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, with a registry error body."""
    error = kind(message, status=status).rendered()
    fields = b"".join(
        b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in error.headers.items()
    )
    head = b"HTTP/1.1 %d %s\r\n%scontent-length: %d\r\nconnection: close\r\n\r\n" % (
        status,
        _STATUS_TEXT[status],
        fields,
        len(error.body),
    )
    return head + error.body


def rendered(
    response: Response, default_headers: list[tuple[bytes, bytes]], *, head: bool
) -> bytes | None:
    """The response as uvicorn writes it for the ASGI path (its `date` and `server` first);
    None for a header value uvicorn would refuse, so that the ASGI path answers it."""
    content = [STATUS_LINE[response.status]]
    for name, value in (*default_headers, *response.fields()):
        if HEADER_VALUE_RE.search(value):
            return None
        content.extend((name, b": ", value, b"\r\n"))
    content.append(b"\r\n")
    if not head:
        content.append(response.body)
    return b"".join(content)


@dataclass(frozen=True, slots=True)
class _KnownRequest:
    """What uvicorn's parser callbacks made of one request's bytes: its part of the scope."""

    method: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: tuple[tuple[bytes, bytes], ...]


class MetaHubHttpProtocol(HttpToolsProtocol):
    _head_fields = 0
    _head_bytes = 0
    _head_timer: asyncio.TimerHandle | None = None
    _in_head = False  # a request has begun and its headers are not complete
    _refusal: bytes | None = None
    _answered = False  # this request was answered from memory: its body and end mean nothing
    _messages = 0  # requests begun in the bytes data_received is feeding the parser
    _complete = True  # the parser is between requests: the last one begun has ended

    # Bytes of whole requests answered from memory -> what the parser made of them; shared by
    # the connections of this process. Only the parsing is skipped: every check runs again.
    _known: ClassVar[dict[bytes, _KnownRequest]] = {}

    # Connections this process holds at most (`server.max_connections`, set by build_app for the
    # process it runs in); None: no limit. One more is answered 503 and closed at once.
    max_connections: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)
        limit = MetaHubHttpProtocol.max_connections
        if limit is not None and len(self.connections) > limit:
            message = f"this server holds its limit of {limit} connections; try again shortly"
            self._refuse(refusal(503, message, errors.ServerBusy))
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._answer_known(data):
            return
        self._messages = 0
        super().data_received(data)
        if (
            self._messages == 1
            and self._answered
            and self._complete
            and len(data) <= KNOWN_REQUEST_BYTES
        ):
            # These bytes were one whole request, answered from memory: remember its parse.
            known = MetaHubHttpProtocol._known
            if len(known) >= KNOWN_REQUESTS:
                known.clear()
            scope = self.scope
            known[bytes(data)] = _KnownRequest(
                scope["method"],
                scope["path"],
                scope["raw_path"],
                scope["query_string"],
                tuple(scope["headers"]),
            )

    def _answer_known(self, data: bytes) -> bool:
        """Answer bytes seen before as one whole request, without parsing them again."""
        request = MetaHubHttpProtocol._known.get(data)
        if (
            request is None
            or not self._complete
            or self.pipeline
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.transport.is_closing()
        ):
            return False
        self._unset_keepalive_if_required()
        self._disarm_head_timer()
        # The scope as on_message_begin and on_headers_complete fill it in.
        scope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": list(request.headers),
            "state": self.app_state.copy(),
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query_string": request.query_string,
        }
        # False: not from memory this time (a token expired, a tag went stale): parse as ever.
        return self._answer_scope(scope)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._messages += 1
        self._complete = False
        self._answered = False
        self._head_fields = 0
        self._head_bytes = 0
        self._in_head = True
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(0, len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(1, len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        if self._answer_from_memory():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._complete = True
        if not self._answered:
            super().on_message_complete()

    def _answer_from_memory(self) -> bool:
        """Answer a warm manifest request at once, as the app would, without an ASGI task.

        Only a plain keep-alive HTTP/1.1 GET or HEAD with nothing before it still being
        answered; the app decides the rest (Observe.answer_from_memory, which counts and logs
        it). What a client receives is byte for byte what the ASGI path sends.
        """
        answer = getattr(self.app, "answer_from_memory", None)
        parser = self.parser
        if (
            answer is None
            or not getattr(self.app, "fast_path", False)
            or self.pipeline
            or (self.cycle is not None and not self.cycle.response_complete)
            or parser.get_method() not in (b"GET", b"HEAD")
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
            or self.expect_100_continue
            or self.limit_concurrency is not None
        ):
            return False
        # The scope as uvicorn's on_headers_complete fills it in.
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed_url.query or b""
        self._answered = self._answer_scope(cast(dict[str, Any], scope))
        return self._answered

    def _answer_scope(self, scope: dict[str, Any]) -> bool:
        """Write the app's answer from memory for `scope`, if it has one, and end the request."""
        if not getattr(self.app, "fast_path", False):
            return False
        defaults, head = self.server_state.default_headers, scope["method"] == "HEAD"
        data = self.app.answer_from_memory(
            scope, lambda response: rendered(response, defaults, head=head)
        )
        if data is None:
            return False
        self.transport.write(data)
        self.on_response_complete()  # counted, reading resumed, keep-alive timer armed
        return True

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error here, ours included: give each its own status, and
        # a registry error body instead of plain text.
        response = self._refusal or refusal(400, "malformed HTTP request")
        self._refuse(response)

    def _count(self, fields: int, size: int) -> None:
        self._head_fields += fields
        self._head_bytes += size
        if self._head_fields > MAX_HEADER_FIELDS or self._head_bytes > MAX_HEADER_BYTES:
            self._refusal = refusal(
                431,
                f"request headers exceed {MAX_HEADER_FIELDS} fields or "
                f"{MAX_HEADER_BYTES // 1024} KiB",
            )
            raise _HeadRefused

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(HEADER_TIMEOUT, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head is late while the previous response still streams: a 408 now
            # would cut into that response, so look again later.
            self._arm_head_timer()
        elif not self._in_head:
            # A connection opened and never used: close it quietly, as after keep-alive.
            self.transport.close()
        else:
            message = f"request headers not received within {HEADER_TIMEOUT:g} s"
            self._refuse(refusal(408, message))

    def _refuse(self, response: bytes) -> None:
        self._disarm_head_timer()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()
