"""How `metahub warm` shows the server's progress events: a rich bar per blob (bytes) on a
terminal, a line per manifest set and per blob finished, and the summary at the end.

Off a terminal (a CI log, a pipe) the bars are left out and the lines stay, so logs read well;
with `--json` every event is printed as the server sent it, one JSON object a line.
"""

from __future__ import annotations

from typing import Any

import click
import orjson
from rich.console import Console

from metahub.publish.progress import ByteBars, ShowsBars, short_digest

RESULT_STYLES = {"fetched": "green", "cached": "cyan", "failed": "red"}


class WarmProgress(ShowsBars):
    def __init__(self, as_json: bool, console: Console | None = None) -> None:
        self.as_json = as_json
        self.console = console or Console()
        self._bars = ByteBars(self.console, shown=not as_json)

    def show(self, event: dict[str, Any]) -> None:
        if self.as_json:
            click.echo(orjson.dumps(event).decode())
            return
        kind = event.get("event")
        if kind == "manifests":
            self._manifests(event)
        elif kind == "blob":
            digest = event["digest"]
            self._bars.add(digest, f"fetching {short_digest(digest)}", event.get("size"))
        elif kind == "progress":
            self._bars.update(event["digest"], event["bytes"])
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
        self._bars.remove(digest)
        result = event["result"]
        style = RESULT_STYLES.get(result, "")
        line = f"{short_digest(digest)} {_size(event['size'])}: [{style}]{result}[/{style}]"
        if event.get("error"):
            line += f" ({event['error']})"
        self._print(line)

    def _print(self, markup: str) -> None:
        self.console.print(markup, highlight=False, soft_wrap=True)


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"
