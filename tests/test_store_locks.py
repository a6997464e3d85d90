"""The start-up lock: processes starting at once on one database do its start-up work in turn.

Each database is a real one: SQLite in a temp dir and a PostgreSQL server on loopback. The
race test starts several real processes at once against a fresh database; without the lock
two of them run alembic side by side and one dies on a table the other just created.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from metahub.config import MachineTypeConfig
from metahub.management.service import ManagementService
from metahub.store.database import open_database
from metahub.store.keys import signing_key
from metahub.store.locks import hold_startup_lock
from metahub.store.schema import machine_types, signing_keys
from tests.support.postgres import PostgresServer

CONFIGURED = [
    MachineTypeConfig(name=f"type-{n}", login=f"login-{n}", password="pw", features=["cpu:zen2"])
    for n in range(3)
]

T = TypeVar("T")
BUSY_TIMEOUT = 5.0  # seconds, as store/database.py sets it for SQLite connections

# What `Hub.start` does with the database, in a process of its own; prints the signing key.
STARTUP = """
import asyncio, sys
from metahub.config import MachineTypeConfig
from metahub.management.service import ManagementService
from metahub.store.database import open_database
from metahub.store.keys import signing_key

async def main(url: str) -> None:
    engine = await open_database(url)
    configured = [
        MachineTypeConfig(name=f"type-{n}", login=f"login-{n}", password="pw",
                          features=["cpu:zen2"])
        for n in range(3)
    ]
    await ManagementService(engine).import_config(configured)
    print((await signing_key(engine)).hex())
    await engine.dispose()

asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """A maker of fresh, empty databases of either kind."""
    if request.param == "sqlite":
        return lambda: f"sqlite+aiosqlite:///{tmp_path / uuid.uuid4().hex}.db"
    server: PostgresServer = request.getfixturevalue("postgres")
    return lambda: server.create_database(f"locks_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def holder(database_url: Callable[[], str]) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A migrated database and a second engine on it for the test to hold the lock with."""
    url = database_url()
    await (await open_database(url)).dispose()
    engine = create_async_engine(url)
    yield url, engine
    await engine.dispose()


async def _blocked_while_held(
    engine: AsyncEngine, work: Coroutine[Any, Any, T], held: float = 0.5
) -> T:
    """Run `work` while `engine` holds the lock for `held` s: it must wait, then finish."""
    async with engine.begin() as connection:
        await hold_startup_lock(connection)
        task = asyncio.create_task(work)
        done, _ = await asyncio.wait([task], timeout=held)
        assert not done, "start-up work ran while another process held the start-up lock"
    return await asyncio.wait_for(task, 30)


async def test_migration_waits_for_the_lock(holder: tuple[str, AsyncEngine]) -> None:
    url, engine = holder

    async def migrate() -> None:
        await (await open_database(url)).dispose()

    await _blocked_while_held(engine, migrate())


async def test_a_wait_longer_than_the_busy_timeout_still_gets_the_lock(tmp_path: Path) -> None:
    """SQLite connections give up on a lock after busy_timeout (5 s); the start-up lock must
    outwait a queue of processes each migrating in turn."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}"
    await (await open_database(url)).dispose()
    engine = create_async_engine(url)
    try:

        async def migrate() -> None:
            await (await open_database(url)).dispose()

        await _blocked_while_held(engine, migrate(), held=BUSY_TIMEOUT + 1)
    finally:
        await engine.dispose()


async def test_signing_key_waits_for_the_lock(holder: tuple[str, AsyncEngine]) -> None:
    url, engine = holder
    other = create_async_engine(url)
    try:
        key = await _blocked_while_held(engine, signing_key(other))
        assert await signing_key(engine) == key
    finally:
        await other.dispose()


async def test_config_import_waits_for_the_lock(holder: tuple[str, AsyncEngine]) -> None:
    url, engine = holder
    other = create_async_engine(url)
    try:
        await _blocked_while_held(engine, ManagementService(other).import_config(CONFIGURED))
    finally:
        await other.dispose()


@pytest.mark.slow  # twelve processes importing MetaHub at once, per database
def test_processes_starting_at_once_share_one_schema_key_and_import(
    database_url: Callable[[], str],
) -> None:
    for _ in range(2):  # each round a fresh database, so every round races on an empty one
        url = database_url()
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", STARTUP, url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        results = [(process.wait(120), *process.communicate()) for process in processes]
        for returncode, _, stderr in results:
            assert returncode == 0, stderr[-3000:]
        assert len({stdout.strip() for _, stdout, _ in results}) == 1
        asyncio.run(_assert_imported_once(url))


async def _assert_imported_once(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            keys = (await connection.execute(select(func.count()).select_from(signing_keys))).one()
            revisions = (
                await connection.execute(select(machine_types.c.name, machine_types.c.revision))
            ).all()
        assert keys[0] == 1
        assert sorted(revisions) == [(f"type-{n}", 1) for n in range(3)]
    finally:
        await engine.dispose()
