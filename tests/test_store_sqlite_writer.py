"""A SQLite file takes new filtered indexes through a connection of its own, in autocommit.

Each test runs against a real SQLite file made by `open_database` (migrations and pragmas as
MetaHub sets them); what was written is read back through other connections, as another worker
would read it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from metahub.store.database import open_database
from metahub.store.digests import FilteredDigestStore, StoredManifest
from tests.support.oci import OCI_INDEX, sha256

REPOSITORY = "hpc/app"


def manifest(number: int) -> StoredManifest:
    return StoredManifest(REPOSITORY, OCI_INDEX, b'{"schemaVersion":2,"n":%d}' % number)


async def put(store: FilteredDigestStore, number: int) -> str:
    stored = manifest(number)
    digest = sha256(stored.content)
    await store.put(digest, stored, machine_type="sky", upstream_digest=sha256(b"up"))
    return digest


def rows(path: Path) -> list[str]:
    """The digests stored, read by a connection of another's."""
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT digest FROM filtered_manifests")]


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[tuple[Path, AsyncEngine]]:
    path = tmp_path / "metahub.db"
    engine = await open_database(f"sqlite+aiosqlite:///{path}")
    yield path, engine
    await engine.dispose()


async def test_a_new_row_is_committed_when_the_write_returns(
    database: tuple[Path, AsyncEngine],
) -> None:
    path, engine = database
    store = FilteredDigestStore(engine)
    try:
        assert store.writer is not None
        written = [await put(store, number) for number in range(3)]
        assert sorted(rows(path)) == sorted(written)
        # And another store on the engine, knowing nothing in memory, reads them there.
        assert await FilteredDigestStore(engine).get(REPOSITORY, written[0]) == manifest(0)
    finally:
        await store.close()


async def test_a_write_refused_while_another_holds_the_lock_is_served_and_the_next_one_lands(
    database: tuple[Path, AsyncEngine], caplog: pytest.LogCaptureFixture
) -> None:
    """The error drops the connection; the next write opens one afresh and is stored."""
    path, engine = database
    store = FilteredDigestStore(engine, busy_timeout=0.1)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        first = await put(store, 1)  # the writer's connection is open now
        blocker.execute("BEGIN EXCLUSIVE")
        refused = await put(store, 2)
        assert "could not store filtered index" in caplog.text
        assert "database is locked" in caplog.text
        assert await store.get(REPOSITORY, refused) == manifest(2)  # from this process's memory
        blocker.execute("ROLLBACK")
        later = await put(store, 3)
        assert sorted(rows(path)) == sorted([first, later])
    finally:
        blocker.close()
        await store.close()


async def test_an_in_memory_database_keeps_its_rows_in_the_engine() -> None:
    """No file to open a second connection to: the rows go through the engine's own."""
    engine = await open_database("sqlite+aiosqlite:///:memory:")
    try:
        store = FilteredDigestStore(engine)
        assert store.writer is None
        digest = await put(store, 1)
        assert await FilteredDigestStore(engine).get(REPOSITORY, digest) == manifest(1)
    finally:
        await engine.dispose()


async def test_closing_the_store_ends_the_writer_s_thread(
    database: tuple[Path, AsyncEngine],
) -> None:
    _, engine = database

    def writers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("metahub-sqlite-writer")}

    before = writers()  # other tests' stores, if any ran in this process
    store = FilteredDigestStore(engine)
    await put(store, 1)
    own = writers() - before
    assert len(own) == 1
    await store.close()
    for _ in range(100):
        if not own & writers():
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the writer's thread outlived the store")


async def test_a_write_after_closing_is_refused_as_the_database_s_and_closing_twice_is_fine(
    database: tuple[Path, AsyncEngine], caplog: pytest.LogCaptureFixture
) -> None:
    path, engine = database
    store = FilteredDigestStore(engine)
    await store.close()
    await store.close()
    digest = await put(store, 1)
    assert "could not store filtered index" in caplog.text
    assert await store.get(REPOSITORY, digest) == manifest(1)
    assert rows(path) == []
