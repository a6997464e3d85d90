"""Work on a stream's chunks in order on a worker thread, without the stream waiting for it.

The blob cache hashes and writes each chunk of a download off the event loop. Handing the
thread one chunk at a time, and waiting for it before handing over the next, left the thread
idle for every turn of the event loop between two chunks and the download waiting on the
thread: neither core was busy, and the fill ran at half the relay's rate. Here chunks that
arrive while the thread works wait in a batch, which the thread takes as a whole as soon as it
is done; the stream waits only when more than `backlog` bytes are waiting, which bounds memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

BACKLOG = 4 * 1024 * 1024


class InOrderWorker:
    """`work` on every chunk put, in order, a batch at a time; `done` per chunk once worked.

    An exception from `work` ends the work: `done` was called for every chunk before the one
    that failed, `put` and `finish` raise the exception from then on, and chunks not yet
    worked on are dropped.
    """

    __slots__ = (
        "_backlog",
        "_changed",
        "_done",
        "_error",
        "_running",
        "_waiting",
        "_waiting_bytes",
        "_work",
    )

    def __init__(
        self,
        work: Callable[[bytes], None],
        done: Callable[[bytes], None],
        backlog: int = BACKLOG,
    ) -> None:
        self._work = work
        self._done = done
        self._backlog = backlog
        self._waiting: list[bytes] = []
        self._waiting_bytes = 0
        self._running: asyncio.Future[tuple[int, Exception | None]] | None = None
        self._changed = asyncio.Event()
        self._error: BaseException | None = None

    @property
    def running(self) -> asyncio.Future[tuple[int, Exception | None]] | None:
        """The batch on the thread now, if any."""
        return self._running

    async def put(self, chunk: bytes) -> None:
        """Queue `chunk`; returns at once unless `backlog` bytes are already waiting."""
        self._raise()
        self._waiting.append(chunk)
        self._waiting_bytes += len(chunk)
        if self._running is None:
            self._start()
        while self._error is None and self._waiting_bytes > self._backlog:
            await self._change()
        self._raise()

    async def finish(self) -> None:
        """Until every chunk put has been worked on."""
        while self._error is None and (self._running is not None or self._waiting):
            await self._change()
        self._raise()

    def _start(self) -> None:
        batch, self._waiting, self._waiting_bytes = self._waiting, [], 0
        running = asyncio.get_running_loop().run_in_executor(None, self._work_on, batch)
        running.add_done_callback(partial(self._worked, batch))
        self._running = running

    def _work_on(self, batch: list[bytes]) -> tuple[int, Exception | None]:
        """On the worker thread: how many chunks of `batch` were worked on, and what stopped
        the rest."""
        for worked, chunk in enumerate(batch):
            try:
                self._work(chunk)
            except Exception as exc:
                return worked, exc
        return len(batch), None

    def _worked(
        self, batch: list[bytes], running: asyncio.Future[tuple[int, Exception | None]]
    ) -> None:
        self._running = None
        if running.cancelled():
            self._error = asyncio.CancelledError()
        elif (crashed := running.exception()) is not None:
            self._error = crashed
        else:
            worked, self._error = running.result()
            for chunk in batch[:worked]:
                self._done(chunk)
            if self._error is None and self._waiting:
                self._start()  # straight on: the thread does not wait for the stream's turn
        if self._error is not None:
            self._waiting, self._waiting_bytes = [], 0
        self._changed.set()

    async def _change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
