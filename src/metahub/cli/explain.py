"""`metahub explain`: the explain API's answer, computed locally and shown as a table."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import click
import orjson

from metahub import errors
from metahub.cli.options import config_option, load_settings, required_config
from metahub.config import ConfigError, Settings
from metahub.oci.reference import parse_image

if TYPE_CHECKING:
    from rich.console import Console


@click.command()
@config_option()
@click.option("--machine-type", required=True, help="The machine type to choose for.")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@click.option(
    "--registry",
    help="The upstream registry (as containerd's ns names it); default: IMAGE's path prefix, "
    "else the default upstream.",
)
@click.argument("image")
def explain(machine_type: str, as_json: bool, registry: str | None, image: str) -> None:
    """Show which entry of IMAGE's index a machine type gets, and why each other does not."""
    settings = load_settings(required_config())
    try:
        explanation = asyncio.run(_explain(settings, machine_type, image, registry))
    except errors.RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    except ConfigError as exc:  # machine types that clash with the database's
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(orjson.dumps(explanation, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.console import Console

    console = Console()
    machine = explanation["machine_type"]
    described = f"{', '.join(machine['features']) or 'no features'}; mode {machine['mode']}"
    if machine["platforms"]:
        described += f"; platforms {', '.join(machine['platforms'])}"
    console.print(
        f"[bold]{image}[/bold] ({explanation['registry']}/{explanation['repository']}) "
        f"for machine type [bold]{machine['name']}[/bold] ({described})"
    )
    _print(console, explanation, indent="")


async def _explain(
    settings: Settings, machine_type: str, image: str, registry: str | None
) -> dict[str, Any]:
    # Imported here: the hub's imports would slow every other command's start.
    from metahub.hub import Hub
    from metahub.serving.explain import explanation_json

    name, reference = parse_image(image)
    hub = await Hub.start(settings)
    try:
        route = hub.router.route(name, registry)
        profile = hub.profiles.named(machine_type)
        filtering = await hub.manifests.explain(route.key, reference, profile)
        return explanation_json(image, route, profile, filtering)
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
        from rich.table import Table

        table = Table(show_lines=False)
        columns = ("#", "platform", "features", "fits", "score", "chosen", "rule", "why not")
        for column in (*columns, "digest"):
            table.add_column(column, overflow="fold")
        for entry in explanation["entries"]:
            score = entry["score"]
            table.add_row(
                str(entry["position"]),
                _platform(entry),
                ", ".join(entry["features"]) or "generic",
                "yes" if entry["fits"] else "no",
                f"{score['satisfied']} / {score['distance']:g}",
                "[green]✔[/green]" if entry["chosen"] else "",
                "; ".join(entry["rules"]),
                "; ".join(entry["why_not"]),
                entry["digest"][:19],
            )
        console.print(table)
    for position, nested in explanation["nested"].items():
        console.print(f"{indent}entry {position} is an index:")
        _print(console, nested, indent=indent + "  ")


def _platform(entry: dict[str, Any]) -> str:
    platform = entry["platform"] or "-"
    served = entry["served_platform"]
    return f"{platform} (served as {served})" if served else platform
