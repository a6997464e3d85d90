"""The `metahub` command."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import click

from metahub import __version__
from metahub.config import ConfigError, Settings, load_config
from metahub.host.commands import detect_command, login_command
from metahub.management_cli import admin, credential, machine_type
from metahub.publish.commands import inspect_command, push_command

DEFAULT_DATA_DIR = Path(os.environ.get("METAHUB_DATA_DIR", "data"))


@click.group()
@click.version_option(__version__, prog_name="metahub")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def main(log_level: str) -> None:
    """MetaHub: a registry proxy that serves each machine type the image built for it."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _load(config: Path) -> Settings:
    try:
        return load_config(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def serve(config_path: Path, host: str, port: int, workers: int) -> None:
    """Serve the registry API in front of the configured upstream."""
    import uvicorn

    from metahub.server.asgi import CONFIG_ENV
    from metahub.server.protocol import MetaHubHttpProtocol
    from metahub.store.files import secure_data_dir

    settings = _load(config_path)  # fail here, with a clear message, not in every worker
    secure_data_dir(settings.data_dir)  # before the metrics files; workers inherit the umask
    os.environ[CONFIG_ENV] = str(config_path.resolve())
    if workers > 1:
        # Each worker counts into files here; /metrics, answered by any worker, adds them up.
        metrics_dir = settings.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(
        "metahub.server.asgi:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=MetaHubHttpProtocol,
        access_log=False,
        log_level="warning",
    )


@main.command("hash-password")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="The password (prompted for when not given).",
)
def hash_password_command(password: str) -> None:
    """Print an argon2 hash to use as a machine type's password_hash."""
    from metahub.auth.passwords import hash_password

    click.echo(hash_password(password))


@main.command()
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

    try:
        asyncio.run(_serve_until_stopped(settings, host, port, announce))
    except KeyboardInterrupt:
        click.echo("MetaHub demo stopped.")


async def _serve_until_stopped(
    settings: Settings, host: str, port: int, on_ready: Callable[[], None]
) -> None:
    import uvicorn

    from metahub.server.app import build_app
    from metahub.server.protocol import MetaHubHttpProtocol

    config = uvicorn.Config(
        build_app(settings),
        host=host,
        port=port,
        loop="none",
        http=MetaHubHttpProtocol,
        access_log=False,
        # docker probes HTTPS before plain HTTP; uvicorn would warn about every probe.
        log_level="error",
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


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--machine-type", required=True, help="The machine type to choose for.")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@click.argument("image")
def explain(config_path: Path, machine_type: str, as_json: bool, image: str) -> None:
    """Show which entry of IMAGE's index a machine type gets, and why each other does not."""
    from metahub.explain_cli import run_explain

    settings = _load(config_path)
    run_explain(settings, machine_type, image, as_json=as_json)


@main.group()
def db() -> None:
    """MetaHub's database."""


@db.command("upgrade")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
def db_upgrade(config_path: Path) -> None:
    """Apply the schema migrations (MetaHub also applies them on start)."""
    from metahub.store.database import default_url, open_database
    from metahub.store.files import secure_data_dir
    from metahub.store.migrate import current_revision

    settings = _load(config_path)

    async def run() -> str | None:
        secure_data_dir(settings.data_dir)
        engine = await open_database(settings.database.url or default_url(settings.data_dir))
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    click.echo(f"database is at revision {asyncio.run(run())}")


for _group in (admin, machine_type, credential):
    main.add_command(_group)
main.add_command(push_command)
main.add_command(inspect_command)
main.add_command(detect_command)
main.add_command(login_command)
