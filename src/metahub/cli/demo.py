"""`metahub demo`: the seed's images, built and served with the seed's logins, from nothing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import click

from metahub.config import Settings

DEFAULT_DATA_DIR = Path(os.environ.get("METAHUB_DATA_DIR", "data"))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--data-dir",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
def demo(host: str, port: int, data_dir: Path) -> None:
    """Build the seed's qnib/bench images and serve them with the seed's four logins."""
    from metahub.demo.config import DEMO_MACHINE_TYPES, demo_settings
    from metahub.demo.images import DemoBuildError, build_demo_layout

    data_dir = data_dir.resolve()
    try:
        build_demo_layout(data_dir / "demo-layout")
    except DemoBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    settings = demo_settings(data_dir)
    registry = f"{host}:{port}"

    def announce() -> None:
        click.echo(f"MetaHub demo is serving {data_dir / 'demo-layout'} on http://{registry}")
        click.echo("Try, with docker (each login gets the image built for its machine type):")
        for login, features in DEMO_MACHINE_TYPES.items():
            click.echo(f"  # {login}: {', '.join(features)}")
            click.echo(f"  docker login -u {login} -p {login} {registry}")
            click.echo(f"  docker run --rm --pull=always {registry}/qnib/bench")
        click.echo("Press Ctrl+C to stop.")

    import uvloop

    try:
        # uvloop, as `metahub serve` runs: the demo is the product, not a slower copy of it.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve_until_stopped(settings, host, port, announce))
    except KeyboardInterrupt:
        click.echo("MetaHub demo stopped.")


async def _serve_until_stopped(
    settings: Settings, host: str, port: int, on_ready: Callable[[], None]
) -> None:
    import uvicorn

    from metahub.cli.serve import uvicorn_options
    from metahub.server.app import build_app

    config = uvicorn.Config(
        build_app(settings),
        host=host,
        port=port,
        # The loop is the runner's; docker probes HTTPS before plain HTTP, and uvicorn
        # would warn about every probe.
        **uvicorn_options(settings, loop="none", log_level="error"),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        on_ready()
    await task
    if not server.started:
        raise click.ClickException(f"could not serve on {host}:{port}")
