"""The access log's buffered writer: nothing lost, nothing late, and the shapes readers expect."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from metahub.server.accesslog import LOGGER_NAME, UPSTREAM_SCOPE_KEY, AccessLog
from metahub.server.observe import Observe


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    yield read, write
    os.close(read)
    os.close(write)


def drained(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


async def test_lines_wait_for_the_interval_then_go_out_together(pipe: tuple[int, int]) -> None:
    read, write = pipe
    log = AccessLog(prefixed=False, fd=write, interval=0.05)
    log.write("one")
    log.write("two")
    assert drained(read) == ""
    await asyncio.sleep(0.2)
    assert drained(read) == "one\ntwo\n"


async def test_a_full_buffer_goes_out_at_once(pipe: tuple[int, int]) -> None:
    read, write = pipe
    log = AccessLog(prefixed=False, fd=write, max_bytes=10, interval=60)
    log.write("12345")
    assert drained(read) == ""
    log.write("67890")
    assert drained(read) == "12345\n67890\n"


def test_without_an_event_loop_a_line_is_written_at_once(pipe: tuple[int, int]) -> None:
    read, write = pipe
    AccessLog(prefixed=False, fd=write).write("now")
    assert drained(read) == "now\n"


def test_plain_lines_carry_the_application_log_prefix(pipe: tuple[int, int]) -> None:
    read, write = pipe
    AccessLog(prefixed=True, fd=write).write('127.0.0.1 "GET /v2/" 200 2 0.1ms')
    line = drained(read)
    assert re.fullmatch(
        r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO metahub\.access: 127\.0\.0\.1 "GET /v2/" '
        r"200 2 0\.1ms\n",
        line,
    ), line


def test_a_closed_log_does_not_stop_serving() -> None:
    read, write = os.pipe()
    os.close(read)
    os.close(write)
    AccessLog(prefixed=False, fd=write).write("lost")  # no exception


async def test_app_shutdown_flushes_what_is_buffered(pipe: tuple[int, int]) -> None:
    read, write = pipe

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        assert callable(send)
        await send({"type": "lifespan.shutdown.complete"})

    observe = Observe(app)
    observe.access = AccessLog(prefixed=False, fd=write, interval=60)
    observe.access.write("last words")
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await observe({"type": "lifespan"}, None, send)
    assert drained(read) == "last words\n"
    assert sent == [{"type": "lifespan.shutdown.complete"}]


async def observed_line(pipe: tuple[int, int], scope: dict[str, object]) -> str:
    """The access line Observe writes for one request with this scope."""
    read, write = pipe

    async def app(scope: dict[str, object], receive: object, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: dict[str, object]) -> None:
        return None

    observe = Observe(app)
    observe.access = AccessLog(prefixed=False, fd=write, interval=60)
    await observe(
        {"type": "http", "method": "GET", "client": ("127.0.0.1", 1), **scope}, None, send
    )
    observe.access.flush()
    return drained(read)


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/v2/a\nforged/manifests/x", "/v2/a\\x0aforged/manifests/x"),
        ("/v2/a\r\nb/manifests/x", "/v2/a\\x0d\\x0ab/manifests/x"),
        ('/v2/a" 200 0 0.1ms/manifests/x', '/v2/a\\" 200 0 0.1ms/manifests/x'),
        ("/v2/a\\x0a/manifests/x", "/v2/a\\\\x0a/manifests/x"),
        ("/v2/a\x1b[31m\x00\x7f/tags/list", "/v2/a\\x1b[31m\\x00\\x7f/tags/list"),
        ("/v2/a\u2028b\x85/tags/list", "/v2/a\\u2028b\\x85/tags/list"),
        ("/v2/ümlaut/manifests/x", "/v2/ümlaut/manifests/x"),
    ],
)
async def test_logged_fields_cannot_forge_lines(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture, path: str, logged: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    line = await observed_line(pipe, {"path": path})
    assert line == f'127.0.0.1 "GET {logged}" 404 2 {line.split()[-1]}\n'
    assert line.count("\n") == 1


async def test_every_plain_field_is_escaped(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    scope = {"path": "/v2/", "method": "GET\nX", "client": ("10.0.0.1\n", 1)}
    line = await observed_line(pipe, scope)
    assert line.startswith('10.0.0.1\\x0a "GET\\x0aX /v2/" 404 ')
    assert line.count("\n") == 1


def test_the_prefix_is_the_time_of_the_line_to_the_millisecond(pipe: tuple[int, int]) -> None:
    read, write = pipe
    log = AccessLog(prefixed=True, fd=write)
    stamps = []
    for _ in range(3):
        before = time.time()
        log.write("line")
        after = time.time()
        stamp = drained(read).partition(" INFO ")[0]
        written = round(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() * 1000)
        # To the millisecond, in local time as logging's asctime: within the write's span.
        assert int(before * 1000) <= written <= int(after * 1000), (before, stamp, after)
        stamps.append(stamp)
        time.sleep(0.0015)  # the next line's millisecond is a new one: a new prefix
    assert len(set(stamps)) == 3


async def test_a_routed_request_names_its_upstream_and_lines_differ_by_it(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    read, write = pipe
    observe = Observe(lambda *_: None)  # one Observe: its remembered line parts in play
    observe.access = AccessLog(prefixed=False, fd=write, interval=60)
    for upstream, status in (("hub", 200), ("ghcr", 200), (None, 200), ("hub", 200), ("hub", 404)):
        scope = {"path": "/v2/a/manifests/x", "client": ("10.0.0.2", 9)}
        if upstream is not None:
            scope[UPSTREAM_SCOPE_KEY] = upstream
        observe._log(scope, "GET", status, 2, 0.00025)
    observe.access.flush()
    assert drained(read).splitlines() == [
        '10.0.0.2 "GET /v2/a/manifests/x" 200 2 0.2ms upstream=hub',
        '10.0.0.2 "GET /v2/a/manifests/x" 200 2 0.2ms upstream=ghcr',
        '10.0.0.2 "GET /v2/a/manifests/x" 200 2 0.2ms',
        '10.0.0.2 "GET /v2/a/manifests/x" 200 2 0.2ms upstream=hub',
        '10.0.0.2 "GET /v2/a/manifests/x" 404 2 0.2ms upstream=hub',
    ]


def test_lines_of_many_distinct_long_requests_leave_little_remembered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    observe = Observe(lambda *_: None)
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        observe.access = AccessLog(prefixed=False, fd=sink)
        for number in range(2000):
            for path in (f"/v2/app{number}/manifests/x", f"/v2/{'a' * 60_000}{number}/x"):
                observe._log({"path": path, "client": ("10.0.0.3", 9)}, "GET", 404, 2, 0.001)
        observe.access.flush()
    finally:
        os.close(sink)
    remembered = observe._line_parts
    assert 0 < len(remembered) <= 256
    assert max(len(key[2]) for key in remembered) <= 1024  # the long paths were not kept
