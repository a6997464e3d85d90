"""How `metahub warm` shows the server's progress events: a rich bar per blob (bytes) on a
terminal, a line per manifest set and per blob finished, and the summary at the end.

Off a terminal (a CI log, a pipe) the bars are left out and the lines stay, so logs read well;
with `--json` every event is printed as the server sent it, one JSON object a line.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import Progress, TaskID

from metahub.publish.progress import byte_bars

RESULT_STYLES = {"fetched": "green", "cached": "cyan", "failed": "red"}


class WarmProgress:
    def __init__(self, as_json: bool, console: Console | None = None) -> None:
        self.as_json = as_json
        self.console = console or Console()
        self._progress: Progress | None = None
        if self.console.is_terminal and not as_json:
            self._progress = byte_bars(self.console)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> WarmProgress:
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

    def show(self, event: dict[str, Any]) -> None:
        if self.as_json:
            click.echo(orjson.dumps(event).decode())
            return
        kind = event.get("event")
        if kind == "manifests":
            self._manifests(event)
        elif kind == "blob" and self._progress is not None:
            description = f"fetching {_short(event['digest'])}"
            self._tasks[event["digest"]] = self._progress.add_task(
                description, total=event.get("size") or None
            )
        elif kind == "progress" and self._progress is not None:
            task = self._tasks.get(event["digest"])
            if task is not None:
                self._progress.update(task, completed=event["bytes"])
        elif kind == "blob_done":
            self._blob_done(event)
        elif kind == "summary":
            self._print(
                f"[bold]summary:[/bold] {event['fetched']} fetched "
                f"({_size(event['bytes_fetched'])}), {event['cached']} already cached, "
                f"{event['failed']} failed; {event['manifests']} manifests, "
                f"{event['manifest_failures']} not resolved"
            )

    def _manifests(self, event: dict[str, Any]) -> None:
        subject = f"{event['image']} for {event['machine_type']}"
        if event.get("error"):
            self._print(f"[red]{subject}: {event['error']}[/red]")
        else:
            self._print(f"{subject}: {event['outcome']}, {event['count']} manifests")

    def _blob_done(self, event: dict[str, Any]) -> None:
        digest = event["digest"]
        task = self._tasks.pop(digest, None)
        if self._progress is not None and task is not None:
            self._progress.remove_task(task)
        result = event["result"]
        style = RESULT_STYLES.get(result, "")
        line = f"{_short(digest)} {_size(event['size'])}: [{style}]{result}[/{style}]"
        if event.get("error"):
            line += f" ({event['error']})"
        self._print(line)

    def _print(self, markup: str) -> None:
        self.console.print(markup, highlight=False, soft_wrap=True)


def _short(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}:{hex_digest[:12]}"


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"
