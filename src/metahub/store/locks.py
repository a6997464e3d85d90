"""One database-wide lock for the start-up work every process does and only one may do at once.

Every worker of every replica migrates the schema, imports the config's machine types and makes
sure a signing key exists when it starts, and several start at once. Each of those steps runs in
a transaction that first takes this lock, so they run one after another and each finds the
work of the one before it done: no two alembic runs creating the same table, no two signing
keys, no revision bumped twice for one config change.

PostgreSQL: a transaction-scoped advisory lock. SQLite: `BEGIN IMMEDIATE`, the database's write
lock taken up front (the driver would begin only at the first write, after the reads that decide
what to write); waiting processes retry for up to five minutes.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# pg_advisory_xact_lock takes a bigint; this is b"metahub\0" read as one, a number another
# application sharing the database is unlikely to lock.
STARTUP_LOCK = int.from_bytes(b"metahub\0", "big")
# How long a SQLite process waits for the lock; PostgreSQL waits as long as it takes.
SQLITE_WAIT_MS = 300_000


async def hold_startup_lock(connection: AsyncConnection) -> None:
    """Take the lock for the rest of this transaction; call it first, before any statement."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": STARTUP_LOCK})
    elif dialect == "sqlite":
        # The connection's usual busy_timeout is too short to wait for a queue of processes
        # each migrating in turn; this one wait may be long.
        previous = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        await connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_WAIT_MS}")
        try:
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            await connection.exec_driver_sql(f"PRAGMA busy_timeout={int(previous or 0)}")
