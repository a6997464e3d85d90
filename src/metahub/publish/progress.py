"""How `metahub push` shows its work on stderr: rich progress bars while blobs are copied.

Bars appear only on a terminal; otherwise (a CI log, a pipe) and with `--quiet` nothing but
the result is printed, so logs stay readable.
"""

from __future__ import annotations

from types import TracebackType

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


def byte_bars(console: Console) -> Progress:
    """A bar per blob in bytes with its rate, gone when done: pushes and warming alike."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    )


class RichReporter:
    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._progress: Progress | None = None
        if console.is_terminal and not quiet:
            self._progress = byte_bars(console)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichReporter:
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

    def blob_started(self, digest: str, size: int, label: str) -> None:
        if self._progress is not None:
            description = f"copying {_short(digest)} from {label}"
            self._tasks[digest] = self._progress.add_task(description, total=size or None)

    def blob_advanced(self, digest: str, nbytes: int) -> None:
        task = self._tasks.get(digest)
        if self._progress is not None and task is not None:
            self._progress.advance(task, nbytes)

    def blob_done(self, digest: str, outcome: BlobOutcome) -> None:
        task = self._tasks.pop(digest, None)
        if self._progress is not None and task is not None:
            self._progress.remove_task(task)
        if self._progress is not None:
            self._progress.console.print(f"{_short(digest)}: {outcome}", highlight=False)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False, soft_wrap=True)


def _short(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}:{hex_digest[:12]}"
