"""`--config`, declared once: given to the group or to a command, it lands in the context object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from metahub.config import ConfigError, Settings, load_config

F = TypeVar("F", bound=Callable[..., Any])
CONFIG_HELP = "The config file (also accepted before the command)."


@dataclass
class Invocation:
    """The click context object: what the group and its commands share."""

    config_path: Path | None = None


def _remember_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    # The command's context shares the group's object, so a later --config wins.
    if value is not None:
        ctx.ensure_object(Invocation).config_path = value


def config_option(help: str = CONFIG_HELP) -> Callable[[F], F]:
    """`--config FILE` on the group or a command; read it with given_config/required_config."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        expose_value=False,
        callback=_remember_config,
        help=help,
    )


def given_config() -> Path | None:
    """The --config given before or after the command, if any."""
    return click.get_current_context().ensure_object(Invocation).config_path


def required_config() -> Path:
    """The --config given before or after the command; a usage error without one."""
    path = given_config()
    if path is None:
        ctx = click.get_current_context()
        option = next(param for param in ctx.command.params if param.name == "config_path")
        raise click.MissingParameter(ctx=ctx, param=option)
    return path


def load_settings(path: Path) -> Settings:
    """The config at `path`; what is wrong with it is one clear line, not a traceback."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
