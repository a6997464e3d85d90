"""The async engine for MetaHub's database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from metahub.config import Settings
from metahub.store.migrate import upgrade


def default_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'metahub.db'}"


async def open_engine(settings: Settings) -> AsyncEngine:
    """The configured database (`database.url`, else a SQLite file in data_dir), up to date.

    The caller has made data_dir private first (store/files.py: secure_data_dir).
    """
    return await open_database(
        settings.database.url or default_url(settings.data_dir),
        busy_timeout=settings.database.busy_timeout,
    )


async def open_database(url: str, *, busy_timeout: float = 5.0) -> AsyncEngine:
    """The engine for `url`, its schema brought up to date (one process at a time)."""
    if url.startswith("postgresql"):
        # A server restart or failover ends every pooled session; each checkout tests its
        # connection first (the database is off the hot path, so the round trip is cheap).
        engine = create_async_engine(url, pool_pre_ping=True)
    else:
        engine = create_async_engine(url)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(busy_timeout))
    await upgrade(engine)
    return engine


def sqlite_pragmas(busy_timeout: float) -> list[str]:
    """What every connection MetaHub opens to a SQLite file is set to: the engine's, and the
    filtered-digest store's own writer (store/sqlite_writer.py)."""
    return [
        # WAL lets several worker processes read while one writes.
        "PRAGMA journal_mode=WAL",
        # How long a statement waits on another process's write lock before it fails.
        f"PRAGMA busy_timeout={int(busy_timeout * 1000)}",
        "PRAGMA foreign_keys=ON",
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives a
        # crash of the process (not of the machine), and a cold tag's write of its filtered
        # index costs half as much (docs/performance.md).
        "PRAGMA synchronous=NORMAL",
    ]


def _sqlite_pragmas(busy_timeout: float) -> Callable[[object, object], None]:
    pragmas = sqlite_pragmas(busy_timeout)

    def on_connect(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    return on_connect
