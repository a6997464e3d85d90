"""A small registry on loopback that misbehaves on cue: aiohttp.web in a thread of its own.

It serves the manifests and blobs a test gives it and records every request it receives, so a
test counts upstream requests where they arrive. On cue it answers with queued failures first
(429/503 with Retry-After, dropped connections), fails everything while `trouble` is set, serves
corrupted blob bytes, redirects blobs to another server, ignores `Range`, answers 206 when no
`Range` was asked, breaks a blob download off part-way, serves a blob in one repository only,
holds a blob download part-way until the test releases it, trickles a blob out a byte at a time,
or answers slowly. It is a real HTTP server: MetaHub talks to it exactly as to any registry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from tests.support.oci import sha256

DROP = -1  # an Answer status that closes the connection without a response


@dataclass(frozen=True)
class Answer:
    """One scripted answer: a status with headers, DROP, or a delay before the real answer."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Blob:
    """`block` repeated `repeat` times: large blobs without holding them in memory twice."""

    block: bytes
    repeat: int = 1
    corrupt_at: int | None = None  # flip the byte at this offset when serving
    redirect_to: str | None = None  # base URL of another server that holds the blob
    gate_after: int | None = None  # stop after this many bytes until `gate` is set
    gate: threading.Event = field(default_factory=threading.Event)
    unasked_range: tuple[int, int] | None = None  # answer 206 with this window to a plain GET
    drop_after: int | None = None  # close the connection after this many bytes of the body
    only_in: str | None = None  # the one repository that holds the blob; others get 404
    trickle: float = 0.0  # when set, one byte every this many seconds, each in time for a read
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            hasher = hashlib.sha256()
            for _ in range(self.repeat):
                hasher.update(self.block)
            self.digest = "sha256:" + hasher.hexdigest()

    @property
    def size(self) -> int:
        return len(self.block) * self.repeat

    def content(self) -> bytes:
        return self.block * self.repeat

    def chunks(self, first: int, last: int, size: int = 1024 * 1024) -> Iterator[bytes]:
        """Bytes first..last (inclusive) in chunks, with the corruption applied."""
        offset = first
        block_len = len(self.block)
        while offset <= last:
            start = offset % block_len
            chunk = self.block[start : start + min(size, last - offset + 1)]
            if self.corrupt_at is not None and offset <= self.corrupt_at < offset + len(chunk):
                flipped = bytearray(chunk)
                flipped[self.corrupt_at - offset] ^= 0xFF
                chunk = bytes(flipped)
            yield chunk
            offset += len(chunk)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival


class ScriptedRegistry:
    """The registry API's read side for what the test put in, with faults on cue."""

    def __init__(self, host: str = "127.0.0.1", *, basic_auth: tuple[str, str] | None = None):
        self.host = host
        self.port = 0
        self.basic_auth = basic_auth
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, Blob] = {}
        self.honour_range = True
        self.trouble: Answer | None = None  # every request but /v2/ answers this while set
        self.delay: dict[str, float] = {}  # path prefix -> seconds before answering
        self.holds: dict[str, threading.Event] = {}  # path -> answered once the event is set
        self.seen: list[Seen] = []
        self.sent: Counter[str] = Counter()  # path -> blob bytes handed to the connection
        self._queued: dict[tuple[str, str], list[Answer]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- content ------------------------------------------------------------------------

    def add_manifest(self, name: str, tag: str | None, data: bytes, media_type: str) -> str:
        digest = sha256(data)
        self.manifests[(name, digest)] = (data, media_type)
        if tag is not None:
            self.manifests[(name, tag)] = (data, media_type)
        return digest

    def add_blob(self, blob: Blob) -> Blob:
        self.blobs[blob.digest] = blob
        return blob

    def hold(self, path: str) -> threading.Event:
        """Requests for `path` wait until the returned event is set."""
        return self.holds.setdefault(path, threading.Event())

    def queue(self, method: str, path: str, *answers: Answer) -> None:
        """Answer the next requests for `method path` with these, then as usual."""
        with self._lock:
            self._queued.setdefault((method, path), []).extend(answers)

    # -- what arrived -------------------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [
                seen
                for seen in self.seen
                if (method is None or seen.method == method) and (path is None or seen.path == path)
            ]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.requests(method, path))

    # -- serving ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        with self._lock:
            seen = Seen(request.method, path, dict(request.headers), time.monotonic(), time.time())
            self.seen.append(seen)
            queued = self._queued.get((request.method, path))
            answer = queued.pop(0) if queued else None
        if answer is None and path != "/v2/":
            answer = self.trouble
        for prefix, seconds in self.delay.items():
            if path.startswith(prefix):
                await asyncio.sleep(seconds)
        hold = self.holds.get(path)
        while hold is not None and not hold.is_set():
            await asyncio.sleep(0.01)
        if answer is not None:
            if answer.delay:
                await asyncio.sleep(answer.delay)
            if answer.status == DROP:
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError
            if answer.status:
                return _error(answer.status, answer.headers)
        if self.basic_auth is not None and not self._authorised(request):
            return _error(401, {"WWW-Authenticate": 'Basic realm="scripted"'})
        if path == "/v2/":
            return web.json_response({})
        parts = path.split("/")
        if len(parts) >= 5 and parts[-2] == "manifests":
            return self._manifest("/".join(parts[2:-2]), parts[-1])
        if len(parts) >= 5 and parts[-2] == "blobs":
            return await self._blob(request, "/".join(parts[2:-2]), parts[-1])
        return _error(404, {})

    def _authorised(self, request: web.Request) -> bool:
        assert self.basic_auth is not None
        expected = base64.b64encode(":".join(self.basic_auth).encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _manifest(self, name: str, reference: str) -> web.StreamResponse:
        found = self.manifests.get((name, reference))
        if found is None:
            return _error(404, {}, "MANIFEST_UNKNOWN")
        data, media_type = found
        headers = {"Docker-Content-Digest": sha256(data), "Content-Type": media_type}
        return web.Response(body=data, headers=headers)

    async def _blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        blob = self.blobs.get(digest)
        if blob is None or blob.only_in not in (None, name):
            return _error(404, {}, "BLOB_UNKNOWN")
        if blob.redirect_to is not None:
            location = f"{blob.redirect_to}{request.path}?signature=scripted"
            return web.Response(status=307, headers={"Location": location})
        first, last, status = 0, blob.size - 1, 200
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        byte_range = request.http_range
        if self.honour_range and "Range" in request.headers:
            start, stop = byte_range.start, byte_range.stop
            if start is not None and start < 0:  # a suffix: the last -start bytes
                first = max(blob.size + start, 0)
            else:
                first = start or 0
                if stop is not None:
                    last = min(stop - 1, last)
            if first >= blob.size:
                return _error(416, {"Content-Range": f"bytes */{blob.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{blob.size}"
        elif blob.unasked_range is not None:
            first, last = blob.unasked_range
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{blob.size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = last - first + 1
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        async for chunk in self._gated(blob, first, last):
            if blob.drop_after is not None and self.sent[request.path] >= blob.drop_after:
                assert request.transport is not None
                request.transport.abort()  # mid-body: the client sees the payload cut short
                raise asyncio.CancelledError
            with self._lock:  # counted first, so the count is never behind what a client has
                self.sent[request.path] += len(chunk)
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _gated(self, blob: Blob, first: int, last: int) -> AsyncIterator[bytes]:
        if blob.trickle:
            for chunk in blob.chunks(first, last, size=1):
                yield chunk
                await asyncio.sleep(blob.trickle)
            return
        offset = first
        for chunk in blob.chunks(first, last):
            if blob.gate_after is not None and offset + len(chunk) > blob.gate_after:
                before = max(blob.gate_after - offset, 0)
                if before:
                    yield chunk[:before]
                while not blob.gate.is_set():
                    await asyncio.sleep(0.01)
                chunk = chunk[before:]
            offset += len(chunk)
            yield chunk

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10) or not self.port:
            raise RuntimeError("the scripted registry did not start")

    def _run(self, started: threading.Event) -> None:
        asyncio.run(self._serve(started))

    async def _serve(self, started: threading.Event) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        listener = socket.socket()
        listener.bind((self.host, 0))
        self.port = listener.getsockname()[1]
        await web.SockSite(runner, listener).start()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        started.set()
        await self._stop.wait()
        await runner.cleanup()

    def stop(self) -> None:
        for blob in self.blobs.values():
            blob.gate.set()  # nothing stays held
        for event in self.holds.values():
            event.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _error(status: int, headers: dict[str, str], code: str = "UNKNOWN") -> web.Response:
    body = f'{{"errors":[{{"code":"{code}","message":"scripted {status}"}}]}}'
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


# A second scripted server (the storage a blob GET is redirected to) listens here, beside the
# upstream on 127.0.0.1, so that MetaHub tells the two apart by host.
CDN_HOST = "127.0.0.2"
UPSTREAM_CREDENTIALS = ("proxy", "upstream-secret")


def relaying_config(upstream: ScriptedRegistry, **extra: Any) -> dict[str, Any]:
    """A MetaHub config in front of `upstream` (with its Basic credentials), allowed to follow
    redirects to CDN_HOST, serving anonymous clients unfiltered; `extra` adds top-level keys."""
    return {
        "upstream": {
            "url": upstream.url,
            "username": UPSTREAM_CREDENTIALS[0],
            "password": UPSTREAM_CREDENTIALS[1],
            "retry_base_delay": 0.01,
            "redirect_hosts": [CDN_HOST],
        },
        "anonymous": {"unfiltered": True},
        **extra,
    }
