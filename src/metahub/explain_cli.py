"""`metahub explain`: the explain API's answer, computed locally and shown as a table."""

from __future__ import annotations

import asyncio
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from metahub import errors
from metahub.config import Settings
from metahub.hub import Hub
from metahub.oci.reference import parse_image
from metahub.serving.explain import explanation_json


def run_explain(settings: Settings, machine_type: str, image: str, *, as_json: bool) -> None:
    try:
        explanation = asyncio.run(_explain(settings, machine_type, image))
    except errors.RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    if as_json:
        click.echo(orjson.dumps(explanation, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    machine = explanation["machine_type"]
    described = f"{', '.join(machine['features']) or 'no features'}; mode {machine['mode']}"
    if machine["platforms"]:
        described += f"; platforms {', '.join(machine['platforms'])}"
    console.print(
        f"[bold]{image}[/bold] for machine type [bold]{machine['name']}[/bold] ({described})"
    )
    _print(console, explanation, indent="")


async def _explain(settings: Settings, machine_type: str, image: str) -> dict[str, Any]:
    name, reference = parse_image(image)
    hub = await Hub.start(settings)
    try:
        profile = hub.profiles.named(machine_type)
        filtering = await hub.manifests.explain(name, reference, profile)
        return explanation_json(image, profile, filtering)
    finally:
        await hub.close()


def _print(console: Console, explanation: dict[str, Any], *, indent: str) -> None:
    upstream = explanation["upstream"]
    console.print(f"{indent}upstream {upstream['digest']} ({upstream['media_type']})")
    if not explanation["filtered"]:
        console.print(f"{indent}served unchanged: no entry declares features")
    elif explanation["served_digest"]:
        console.print(f"{indent}served as {explanation['served_digest']}")
    else:
        console.print(f"{indent}[red]nothing fits:[/red] {explanation['error']}")
    if explanation["entries"]:
        table = Table(show_lines=False)
        for column in ("#", "platform", "features", "fits", "score", "chosen", "why not", "digest"):
            table.add_column(column, overflow="fold")
        for entry in explanation["entries"]:
            score = entry["score"]
            table.add_row(
                str(entry["position"]),
                entry["platform"] or "-",
                ", ".join(entry["features"]) or "generic",
                "yes" if entry["fits"] else "no",
                f"{score['satisfied']} / {score['distance']:g}",
                "[green]✔[/green]" if entry["chosen"] else "",
                "; ".join(entry["why_not"]),
                entry["digest"][:19],
            )
        console.print(table)
    for position, nested in explanation["nested"].items():
        console.print(f"{indent}entry {position} is an index:")
        _print(console, nested, indent=indent + "  ")
