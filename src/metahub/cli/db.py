"""`metahub db`: MetaHub's database from the shell."""

from __future__ import annotations

import asyncio

import click

from metahub.cli.options import config_option, load_settings, required_config


@click.group()
def db() -> None:
    """MetaHub's database."""


@db.command("upgrade")
@config_option()
def db_upgrade() -> None:
    """Apply the schema migrations (MetaHub also applies them on start)."""
    from metahub.store.database import open_engine
    from metahub.store.files import secure_data_dir
    from metahub.store.migrate import current_revision

    settings = load_settings(required_config())

    async def run() -> str | None:
        secure_data_dir(settings.data_dir)
        engine = await open_engine(settings)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    click.echo(f"database is at revision {asyncio.run(run())}")
