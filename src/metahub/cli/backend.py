"""Where a management command works: the configured database, or a running server's API.

Each command takes `--config FILE` or `--server URL --token TOKEN` (or METAHUB_SERVER /
METAHUB_TOKEN), and `--json` to print the API's JSON.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson

from metahub import errors
from metahub.cli.options import config_option, given_config
from metahub.config import ConfigError, load_config

if TYPE_CHECKING:
    from rich.table import Table

    from metahub.management.backends import Backend

T = TypeVar("T")


def backend_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        config_option(help="Work on this config's database directly."),
        click.option("--server", envvar="METAHUB_SERVER", help="Or: a running MetaHub's URL."),
        click.option("--token", envvar="METAHUB_TOKEN", help="An admin token for --server."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def run(server: str | None, token: str | None, work: Callable[[Backend], Awaitable[T]]) -> T:
    # Imported here: the backends pull in SQLAlchemy and aiohttp, which would slow every
    # command's start, `metahub --help` included.
    from sqlalchemy.exc import SQLAlchemyError

    from metahub.management.backends import LocalBackend, RemoteBackend

    config_path = given_config()

    async def go() -> T:
        backend: Backend
        if server is not None:
            if not token:
                raise click.UsageError("--server needs --token (or METAHUB_TOKEN)")
            backend = RemoteBackend(server, token)
        elif config_path is not None:
            backend = await LocalBackend.open(load_config(config_path))
        else:
            raise click.UsageError("give --config FILE, or --server URL with --token")
        try:
            return await work(backend)
        finally:
            await backend.close()

    try:
        return asyncio.run(go())
    except errors.RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    except ConfigError as exc:  # the file's, or its machine types clashing with the database's
        raise click.ClickException(str(exc)) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise click.ClickException(f"cannot use the database: {exc}") from exc


def with_backend(function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Turn `async def f(backend, as_json, **options)` into a callback taking backend_options."""

    @functools.wraps(function)
    def callback(server: str | None, token: str | None, as_json: bool, **options: Any) -> None:
        run(server, token, lambda backend: function(backend, as_json, **options))

    return callback


def emit(data: Any, as_json: bool, table: Callable[[Any], Table] | None = None) -> None:
    """JSON as the API answers it (an object for one thing, a list for many), or a table."""
    if as_json or table is None:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        show(table(data if isinstance(data, list) else [data]))


# rich is imported when a table is drawn, not when the command module is: it costs every start.
def new_table(title: str) -> Table:
    from rich.table import Table

    return Table(title=title)


def show(*tables: Table) -> None:
    from rich.console import Console

    console = Console()
    for table in tables:
        console.print(table)
