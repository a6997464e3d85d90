"""One SQLite connection of its own, in autocommit, for the write a cold tag waits on.

A new filtered index is committed before its answer goes out (docs/decisions.md). Through the
engine, that row cost a pool checkout, an insert, a commit and a check-in, which rolls back:
0.8 to 2.5 ms of a cold tag here, most of it hand-overs between the event loop and the driver's
thread. Here it is one statement on a thread of its own, committed as it runs (autocommit:
a single INSERT is its own transaction): 0.23 to 0.28 ms through the store.

The connection opens at the first write and is dropped after any error but a duplicate row, so
that a database file replaced or gone is opened afresh by the next write. Errors come as
SQLAlchemy's, as the engine's would. The thread is a one-worker executor's: an idle one is
joined at interpreter exit, so a writer never closed does not hold the process up.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import DBAPIError, IntegrityError

from metahub.store.database import sqlite_pragmas


class SqliteWriter:
    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._connection: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="metahub-sqlite-writer")
        self._closed = False

    async def insert(self, statement: str, values: Sequence[object]) -> None:
        """Run `statement` with `values`, committed when this returns."""
        if self._closed:  # shutting down: refused like a database that cannot be written
            closed = sqlite3.ProgrammingError("the SQLite writer is closed")
            raise DBAPIError(statement, values, closed)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._insert, statement, values)

    def _insert(self, statement: str, values: Sequence[object]) -> None:
        try:
            self._connect().execute(statement, values)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(statement, values, exc) from exc
        except sqlite3.Error as exc:
            self._drop()
            raise DBAPIError(statement, values, exc) from exc

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,  # autocommit
                check_same_thread=False,  # opened and used on the writer's one thread
            )
            try:
                for pragma in sqlite_pragmas(self.busy_timeout):  # as the engine's connections
                    connection.execute(pragma)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._drop)
        self._thread.shutdown(wait=False)
