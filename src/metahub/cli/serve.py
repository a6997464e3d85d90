"""`metahub serve` and `metahub hash-password`: running the registry and configuring its logins."""

from __future__ import annotations

import os
import shutil

import click

from metahub.cli.options import config_option, load_settings, required_config


@click.command()
@config_option()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def serve(host: str, port: int, workers: int) -> None:
    """Serve the registry API in front of the configured upstream."""
    import uvicorn

    from metahub.server.asgi import CONFIG_ENV
    from metahub.server.protocol import MetaHubHttpProtocol
    from metahub.store.files import secure_data_dir

    config_path = required_config()
    settings = load_settings(config_path)  # fail here, with a clear message, not in every worker
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


@click.command("hash-password")
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
