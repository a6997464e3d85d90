"""The access log's writer: lines buffered and written together, as nginx's `buffer=` does.

Every request writes a line. Through `logging`, each line cost a record, a formatted time, a
lock and a write system call: a fifth of a warm request's CPU (docs/decisions.md). Here a line
is a string appended to a list; the list goes out in one write once it holds `max_bytes`, or
`interval` seconds after its first line, and when the process exits.

Plain lines keep the application log's shape (`<time> INFO metahub.access: ...`) so one reader
takes both; JSON lines are written bare, one object a line. Fields of a plain line are
`escaped`: a client's `%0a` in a path must not start a line of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time

LOGGER_NAME = "metahub.access"
# The ASGI scope key under which the registry routes note the upstream a request went to.
UPSTREAM_SCOPE_KEY = "metahub.upstream"


def escaped(field: str) -> str:
    """`field` safe in a plain line: unprintable characters (line breaks, terminal escapes)
    as `\\xHH`, `\\uHHHH` or `\\UHHHHHHHH`, and the backslash and `"` escaped with a backslash."""
    if field.isprintable() and '"' not in field and "\\" not in field:
        return field  # nearly always: nothing to copy
    return "".join(_escape(c) for c in field)


def _escape(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class AccessLog:
    def __init__(
        self, *, prefixed: bool, fd: int = 2, max_bytes: int = 64 * 1024, interval: float = 0.25
    ) -> None:
        self._prefixed = prefixed
        self._fd = fd
        self._max_bytes = max_bytes
        self._interval = interval
        self._lines: list[str] = []
        self._size = 0
        self._flush_scheduled = False
        self._millisecond = -1
        self._prefix = ""
        self._second = -1
        self._date = ""
        atexit.register(self.flush)

    def write(self, line: str) -> None:
        if self._prefixed:
            millisecond = int(time.time() * 1000)
            if millisecond != self._millisecond:  # lines of the same millisecond share it
                self._millisecond = millisecond
                self._prefix = f"{self._stamp(millisecond)} INFO {LOGGER_NAME}: "
            line = self._prefix + line
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= self._max_bytes:
            self.flush()
        elif not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop to flush later: write now
                self.flush()
                return
            self._flush_scheduled = True
            loop.call_later(self._interval, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        data = ("\n".join(self._lines) + "\n").encode("utf-8", "replace")
        self._lines.clear()
        self._size = 0
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            pass  # nowhere to log to (stderr closed): the access log is lost, serving goes on

    def _stamp(self, millisecond: int) -> str:
        """The time as logging's default `asctime` shows it, the date part made once a second."""
        second, part = divmod(millisecond, 1000)
        if second != self._second:
            self._second = second
            self._date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._date},{part:03d}"
