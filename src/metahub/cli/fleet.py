"""`metahub coverage` (computed locally, as `metahub explain` is) and `metahub warm` (asks a
running server, whose caches are the ones to fill, and shows its progress)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import click
import orjson

from metahub import errors
from metahub.cli.options import config_option, load_settings, required_config
from metahub.config import ConfigError, Settings

if TYPE_CHECKING:
    from rich.console import Console

OUTCOME_STYLES = {"matched": "green", "generic": "yellow", "none": "red"}


@click.command()
@config_option()
@click.option(
    "--machine-type",
    "machine_types",
    multiple=True,
    help="A machine type to include (repeatable; default: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the coverage as JSON.")
@click.argument("images", nargs=-1, required=True)
def coverage(machine_types: tuple[str, ...], as_json: bool, images: tuple[str, ...]) -> None:
    """Show, for every machine type and IMAGE, whether a pull gets a build matched to it, the
    generic build, or nothing, and which cpu builds would match the generic ones."""
    settings = load_settings(required_config())
    try:
        report = asyncio.run(_coverage(settings, images, machine_types))
    except errors.RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.console import Console

    _print_coverage(Console(), report)


async def _coverage(
    settings: Settings, images: tuple[str, ...], machine_types: tuple[str, ...]
) -> dict[str, Any]:
    # Imported here: the hub's imports would slow every other command's start.
    from metahub.hub import Hub
    from metahub.serving.coverage import coverage_of

    hub = await Hub.start(settings)
    try:
        return await coverage_of(hub.manifests, hub.profiles, images, machine_types, hub.router)
    finally:
        await hub.close()


def _print_coverage(console: Console, report: dict[str, Any]) -> None:
    from rich.table import Table

    from metahub.serving.coverage import suggestion_text

    rows = report["images"]
    table = Table(title="Coverage: what a pull gets")
    table.add_column("machine type")
    for row in rows:
        table.add_column(row["image"], overflow="fold")
    names = [cell["machine_type"] for cell in rows[0]["machine_types"]] if rows else []
    for position, name in enumerate(names):
        cells = []
        for row in rows:
            cell = row["machine_types"][position]
            style = OUTCOME_STYLES.get(cell["outcome"], "")
            features = sorted({f for entry in cell["entries"] for f in entry["features"]})
            chosen = f" ({', '.join(features)})" if features else ""
            cells.append(f"[{style}]{cell['outcome']}[/{style}]{chosen}")
        table.add_row(name, *cells)
    console.print(table)
    for row in rows:
        console.print(f"{row['image']}: {suggestion_text(row['suggested_builds'])}")


@click.command()
@click.option("--server", envvar="METAHUB_SERVER", required=True, help="A running MetaHub's URL.")
@click.option("--token", envvar="METAHUB_TOKEN", required=True, help="An admin token.")
@click.option(
    "--machine-type",
    "machine_types",
    multiple=True,
    help="A machine type to warm for (repeatable; default: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the server's events as JSON lines.")
@click.argument("images", nargs=-1, required=True)
def warm(
    server: str, token: str, machine_types: tuple[str, ...], as_json: bool, images: tuple[str, ...]
) -> None:
    """Fetch into a server's caches the manifests and blobs each machine type's pull of IMAGE
    would get, so those pulls work even while the upstream is unreachable."""
    from metahub.cli.warm_progress import WarmProgress

    body = {"images": list(images), "machine_types": list(machine_types)}
    progress = WarmProgress(as_json)
    try:
        summary = asyncio.run(_warm(server, token, body, progress))
    except errors.RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    if summary is None:
        raise click.ClickException(f"{server} ended the warm without a summary")
    if summary["failed"] or summary["manifest_failures"]:
        raise SystemExit(1)


async def _warm(
    server: str, token: str, body: dict[str, Any], progress: Any
) -> dict[str, Any] | None:
    from metahub.management.backends import RemoteBackend

    summary: dict[str, Any] | None = None
    backend = RemoteBackend(server, token)
    try:
        with progress:
            async for event in backend.events("/warm", body):
                progress.show(event)
                if event.get("event") == "summary":
                    summary = event
    finally:
        await backend.close()
    return summary
