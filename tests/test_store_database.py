"""The database engine MetaHub opens: schema on open, and a pool that outlives a server restart.

A PostgreSQL restart or failover ends every session the replicas' pools hold. The next use of
each pooled connection must find out and reconnect, not fail a directory refresh or an admin
request; that is checked here by ending the sessions on a real server.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from metahub.management.directory import Directory
from metahub.store.database import open_database
from metahub.store.migrate import current_revision
from tests.support.postgres import PostgresServer

END_OTHER_SESSIONS = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def test_pooled_connections_the_server_ended_are_replaced(postgres: PostgresServer) -> None:
    url = postgres.create_database(f"engine_{uuid.uuid4().hex[:12]}")
    engine = await open_database(url)
    killer = create_async_engine(url, poolclass=NullPool)
    try:
        assert await current_revision(engine) is not None
        directory = Directory(engine, [])
        await directory.load()  # the pool now holds an open session
        async with killer.connect() as connection:
            ended = (await connection.execute(END_OTHER_SESSIONS)).scalar_one()
        assert ended >= 1
        await directory.load()
        assert await current_revision(engine) is not None
    finally:
        await killer.dispose()
        await engine.dispose()
