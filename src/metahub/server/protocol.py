"""uvicorn's HTTP protocol: a response's head and small body in one system call, and limits on
what a client may send before the application sees a request.

uvicorn writes the status line and headers, then the body, each with its own `transport.write`,
and uvloop sends each at once: two `send` system calls for every manifest, which the profile of
warm pulls put at two fifths of the server's CPU (docs/decisions.md). Here small writes made in
one turn of the event loop are joined and sent together at the end of that turn. Large writes
(blob chunks) go out as they come, after anything held back, so streaming and its back-pressure
are unchanged.

A body that lies in a file (a blob cache hit) can leave by `sendfile`, the kernel copying from
the page cache to the socket: the ASGI `http.response.zerocopy` extension, which uvicorn does not
offer, is offered here. `sendfile` runs on a worker thread, since reading a file that is not in
the page cache blocks whatever the socket's mode; the thread goes on while the client takes the
bytes (16 MiB at most per hand-over, the threads being shared), and a client whose socket stays
full for 10 ms has its wait moved to the event loop, so a slow client holds no thread.

A warm manifest pull (GET or HEAD, a Bearer token, an answer memory alone gives) is answered
here, before any ASGI request starts (`server.fast_path`): the app's `answer_from_memory` runs
the same routing, token, access and cache checks as the full path and returns None whenever any
of them would need more, and the request then takes the full path as ever.

A request's head is bounded in fields, bytes and time: without limits one unauthenticated
request with 150,000 `Accept` lines held the event loop for seconds, and connections that drip
header lines stay open for ever. The refusals are registry error bodies, like every other answer.
"""

from __future__ import annotations

import asyncio
import os
import select
import urllib.parse
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import (
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from metahub import errors, metrics
from metahub.server.http import HEADER_FIELDS, ZEROCOPY, Response, header_fields

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

# The most one hand-over to a worker thread sends (a few ms at loopback speed: the threads are
# shared, and a long transfer must not keep them from other work), and how long the thread waits
# for a full socket before it leaves the wait to the event loop.
SENDFILE_TURN = 16 * 1024 * 1024
SENDFILE_PATIENCE = 0.01

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


def _send_while_taken(sock: int, fd: int, offset: int, count: int) -> int:
    """`sendfile` for as long as the client takes the bytes; how many were sent.

    Runs on a worker thread: up to SENDFILE_TURN bytes while the client keeps up; a client whose
    socket stays full for SENDFILE_PATIENCE gives the thread back sooner.
    """
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    sent = 0
    count = min(count, SENDFILE_TURN)
    while sent < count:
        try:
            done = os.sendfile(sock, fd, offset + sent, count - sent)
        except BlockingIOError:
            if not poller.poll(SENDFILE_PATIENCE * 1000):
                break
            continue
        if done == 0:
            raise OSError(f"the file ended {count - sent} bytes short")
        sent += done
    return sent


def _close(*descriptors: int) -> None:
    for descriptor in descriptors:
        os.close(descriptor)


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
    None for a header value uvicorn would refuse, so that the ASGI path answers it.

    Made once per response and set of default headers (uvicorn makes a new list when the
    `date` changes, once a second): a warm pull's response is the same object every time.
    """
    written = response.written
    if written is not None and written[0] is default_headers and written[1] is head:
        return written[2]
    content = [STATUS_LINE[response.status]]
    data: bytes | None = None
    for name, value in (*default_headers, *response.fields()):
        if HEADER_VALUE_RE.search(value):
            break
        content.extend((name, b": ", value, b"\r\n"))
    else:
        content.append(b"\r\n")
        if not head:
            content.append(response.body)
        data = b"".join(content)
    response.written = (default_headers, head, data)
    return data


@dataclass(frozen=True, slots=True)
class _KnownRequest:
    """What uvicorn's parser callbacks made of one request's bytes: its part of the scope."""

    method: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    fields: dict[str, str]  # `headers` as `Request.headers` has them: made once, not per request


class MetaHubHttpProtocol(HttpToolsProtocol):
    _head_fields = 0
    _head_bytes = 0
    _head_timer: asyncio.TimerHandle | None = None
    _in_head = False  # a request has begun and its headers are not complete
    _refusal: bytes | None = None
    _answered = False  # this request was answered from memory: its body and end mean nothing
    _messages = 0  # requests begun in the bytes data_received is feeding the parser
    _complete = True  # the parser is between requests: the last one begun has ended
    # The keep-alive timer of answers from memory, and when the last of them was written.
    _idle_timer: asyncio.TimerHandle | None = None
    _answered_at = 0.0

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

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.scope.setdefault("extensions", {})[ZEROCOPY] = {}
        cycle.send = partial(self._send, cycle, cycle.send)  # type: ignore[method-assign]
        super()._start_asgi_task(cycle, app)

    async def _send(self, cycle: RequestResponseCycle, send: Any, message: Any) -> None:
        if message["type"] != ZEROCOPY:
            await send(message)
            return
        if not cycle.response_started or cycle.response_complete:
            raise RuntimeError(f"{ZEROCOPY} is a body: it goes after the head, before the end")
        file = message["file"]
        fd = file if isinstance(file, int) else file.fileno()
        offset = message.get("offset", 0)
        count = message.get("count")
        if count is None:
            count = os.fstat(fd).st_size - offset
        if count > cycle.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        if not cycle.disconnected:
            try:
                await self._sendfile(fd, offset, count)
            except OSError:  # the client went away (or the file shrank): end the connection
                cycle.disconnected = True
                self.transport.abort()
                return
        cycle.expected_content_length -= count
        if not message.get("more_body", False):
            await send({"type": "http.response.body", "body": b""})

    async def _sendfile(self, fd: int, offset: int, count: int) -> None:
        """`count` bytes of `fd` from `offset` to the client, after what was written before."""
        transport: CoalescingTransport = self.transport  # type: ignore[assignment]
        transport.flush()  # the response's head, held back until the end of the turn
        # Our own descriptors: a worker thread still sending when this task is cancelled must
        # not find them closed (or their numbers reused) under it.
        sock = os.dup(self.transport.get_extra_info("socket").fileno())
        source = os.dup(fd)
        sending: asyncio.Future[int] | None = None
        try:
            # Whatever the transport still buffers goes first; it sends it when writable.
            while self.transport.get_write_buffer_size():
                await self._writable(sock)
                await asyncio.sleep(0)
            while count > 0:
                sending = self.loop.run_in_executor(
                    None, _send_while_taken, sock, source, offset, count
                )
                sent = await sending
                offset += sent
                count -= sent
                if count and sent < SENDFILE_TURN:  # a slow client: wait on the loop, not a thread
                    await self._writable(sock)
        finally:
            if sending is not None and not sending.done():
                sending.add_done_callback(lambda _: _close(sock, source))
            else:
                _close(sock, source)

    async def _writable(self, sock: int) -> None:
        """Until the socket (`sock`, our own duplicate of the transport's) can take more.

        The duplicate is watched rather than the transport's own descriptor, which the event
        loop keeps to the transport.
        """
        ready: asyncio.Future[None] = self.loop.create_future()

        def writable() -> None:  # the loop may call again before this task runs
            if not ready.done():
                ready.set_result(None)

        self.loop.add_writer(sock, writable)
        try:
            await ready
        finally:
            self.loop.remove_writer(sock)

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
                header_fields(scope["headers"]),
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
            HEADER_FIELDS: request.fields,
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
        # Its counts are applied at the end of this turn, before its write leaves (metrics.py).
        metrics.open_batch(self.loop)
        try:
            data = self.app.answer_from_memory(
                scope, lambda response: rendered(response, defaults, head=head)
            )
        finally:
            metrics.close_batch()
        if data is None:
            return False
        self.transport.write(data)
        self._answered_from_memory()
        return True

    def _answered_from_memory(self) -> None:
        """uvicorn's on_response_complete (the request counted, reading resumed, the keep-alive
        timer armed), with a keep-alive timer that runs on across answers from memory.

        uvicorn cancels the timer when a request comes and starts one when it is answered: on a
        connection of warm pulls a twentieth of each request's CPU. Here the answer only notes its
        time, and the timer, when it fires, waits on for what is left of the connection's idle
        time. A request that takes the full path cancels it as ever (uvicorn's data_received).
        """
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        self._answered_at = self.loop.time()
        timer = self.timeout_keep_alive_task
        if timer is not None and timer is not self._idle_timer:
            timer.cancel()  # uvicorn's own, after an answer from the full path
            timer = None
        if timer is None:
            timer = self.loop.call_later(self.timeout_keep_alive, self._idle_timer_fired)
            self.timeout_keep_alive_task = self._idle_timer = timer

    def _idle_timer_fired(self) -> None:
        idle = self.loop.time() - self._answered_at
        if idle < self.timeout_keep_alive:
            timer = self.loop.call_later(self.timeout_keep_alive - idle, self._idle_timer_fired)
            self.timeout_keep_alive_task = self._idle_timer = timer
            return
        self.timeout_keep_alive_task = self._idle_timer = None
        self.timeout_keep_alive_handler()

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
