"""The `metahub` command: the group, its global options, and one module per command group."""

from __future__ import annotations

import click

from metahub import __version__
from metahub.cli.db import db
from metahub.cli.demo import demo
from metahub.cli.explain import explain
from metahub.cli.fleet import coverage, warm
from metahub.cli.host import detect_command, login_command
from metahub.cli.manage import admin, credential, machine_type
from metahub.cli.options import config_option
from metahub.cli.publish import inspect_command, push_command
from metahub.cli.serve import hash_password_command, serve
from metahub.logsetup import setup_logging


@click.group()
@click.version_option(__version__, prog_name="metahub")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@config_option(help="The config file, for the commands that read one.")
def main(log_level: str) -> None:
    """MetaHub: a registry proxy that serves each machine type the image built for it."""
    setup_logging(log_level)


for _command in (
    serve,
    hash_password_command,
    demo,
    explain,
    coverage,
    warm,
    db,
    admin,
    machine_type,
    credential,
    push_command,
    inspect_command,
    detect_command,
    login_command,
):
    main.add_command(_command)
