"""Bringing a database to the newest schema with alembic: on start and by `metahub db upgrade`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from metahub.store.locks import hold_startup_lock

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The first release created its one table without alembic; such a database is at 0001.
UNVERSIONED_RELEASE = "0001"


def _config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, target: str) -> None:
    from alembic import command

    config = _config(connection)
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables and "filtered_manifests" in tables:
        command.stamp(config, UNVERSIONED_RELEASE)
    command.upgrade(config, target)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine, target: str = "head") -> None:
    # alembic narrates every plugin and step at INFO (from its import on, hence the lazy
    # imports here); MetaHub's own log says what matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    async with engine.begin() as connection:
        # Every worker of every replica upgrades on start; one at a time, the rest find it done.
        await hold_startup_lock(connection)
        await connection.run_sync(_upgrade, target)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
