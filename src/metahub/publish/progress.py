"""How `metahub push` shows its work on stderr: rich progress bars while blobs are copied.

Bars appear only on a terminal; otherwise (a CI log, a pipe) and with `--quiet` nothing but
the result is printed, so logs stay readable.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from metahub.publish.push import BlobOutcome


class ByteBars:
    """A bar per blob in bytes with its rate, gone when done, on a terminal only: pushes and
    warming alike. Off a terminal, or when `shown` is False, every call does nothing."""

    def __init__(self, console: Console, *, shown: bool = True) -> None:
        self._progress: Progress | None = None
        if console.is_terminal and shown:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=console,
                transient=True,
            )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ByteBars:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, digest: str, description: str, size: int | None) -> None:
        if self._progress is not None:
            self._tasks[digest] = self._progress.add_task(description, total=size or None)

    def advance(self, digest: str, nbytes: int) -> None:
        task = self._tasks.get(digest)
        if self._progress is not None and task is not None:
            self._progress.advance(task, nbytes)

    def update(self, digest: str, completed: int) -> None:
        task = self._tasks.get(digest)
        if self._progress is not None and task is not None:
            self._progress.update(task, completed=completed)

    def remove(self, digest: str) -> None:
        task = self._tasks.pop(digest, None)
        if self._progress is not None and task is not None:
            self._progress.remove_task(task)

    def print(self, markup: str) -> None:
        """A line above the bars (they stay at the bottom); only while they are shown."""
        if self._progress is not None:
            self._progress.console.print(markup, highlight=False)


class ShowsBars:
    """A reporter whose `with` block shows its ByteBars."""

    _bars: ByteBars

    def __enter__(self) -> Self:
        self._bars.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._bars.__exit__(exc_type, exc, traceback)


class RichReporter(ShowsBars):
    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._bars = ByteBars(console, shown=not quiet)

    def blob_started(self, digest: str, size: int, label: str) -> None:
        self._bars.add(digest, f"copying {short_digest(digest)} from {label}", size)

    def blob_advanced(self, digest: str, nbytes: int) -> None:
        self._bars.advance(digest, nbytes)

    def blob_done(self, digest: str, outcome: BlobOutcome) -> None:
        self._bars.remove(digest)
        self._bars.print(f"{short_digest(digest)}: {outcome}")

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False, soft_wrap=True)


def short_digest(digest: str) -> str:
    """`sha256:` and the first 12 hex digits: enough to tell blobs apart in a listing."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}:{hex_digest[:12]}"
