"""Schema migrations: from nothing, and from every earlier revision with data in it, on SQLite
and PostgreSQL, through `metahub.store.migrate` (what start-up runs) and `metahub db upgrade`.

The tables that `store/schema.py` describes (what the code queries) must be exactly what the
migrations build: alembic's own autogenerate comparison must find no difference.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, insert, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from metahub.management.service import ManagementService
from metahub.store.migrate import MIGRATIONS, current_revision, upgrade
from metahub.store.schema import credentials, filtered_manifests, machine_types, metadata
from tests.support.postgres import PostgresServer

SCRIPTS = ScriptDirectory(str(MIGRATIONS))
HEAD = SCRIPTS.get_current_head()
# Oldest first: ["0001", "0002", ...]
REVISIONS = [script.revision for script in reversed(list(SCRIPTS.walk_revisions()))]
EARLIER = REVISIONS[:-1]

MANIFEST = {
    "digest": "sha256:" + "ab" * 32,
    "repository": "qnib/bench",
    "media_type": "application/vnd.oci.image.index.v1+json",
    "content": b'{"schemaVersion":2,"manifests":[]}',
    "machine_type": "type1",
    "upstream_digest": "sha256:" + "cd" * 32,
}
# The first release made its one table without alembic; this is the DDL it ran.
FIRST_RELEASE_DDL = """
CREATE TABLE filtered_manifests (
    digest VARCHAR(150) NOT NULL,
    repository VARCHAR(255) NOT NULL,
    media_type VARCHAR(255) NOT NULL,
    content BLOB NOT NULL,
    machine_type VARCHAR(255) NOT NULL,
    upstream_digest VARCHAR(150) NOT NULL,
    created DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL,
    PRIMARY KEY (digest, repository)
)
"""


def test_revisions_form_one_line() -> None:
    assert REVISIONS[0] == "0001" and REVISIONS[-1] == HEAD
    assert len(SCRIPTS.get_heads()) == 1
    assert len(REVISIONS) >= 2


# -- databases --------------------------------------------------------------------------------

Database = Callable[[], AsyncEngine]


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """Makes an empty database of the parametrized kind and returns an engine for it."""

    def sqlite() -> AsyncEngine:
        return create_async_engine(f"sqlite+aiosqlite:///{tmp_path / uuid.uuid4().hex}.db")

    def postgresql() -> AsyncEngine:
        server: PostgresServer = request.getfixturevalue("postgres")
        return create_async_engine(server.create_database(f"m{uuid.uuid4().hex[:12]}"))

    return sqlite if request.param == "sqlite" else postgresql


@pytest.fixture
async def engine(new_database: Database) -> AsyncIterator[AsyncEngine]:
    created = new_database()
    yield created
    await created.dispose()


def schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


# -- from nothing -----------------------------------------------------------------------------


async def test_upgrade_from_empty_builds_exactly_the_described_schema(engine: AsyncEngine) -> None:
    assert await current_revision(engine) is None
    await upgrade(engine)
    assert await current_revision(engine) == HEAD
    async with engine.connect() as connection:
        assert await connection.run_sync(schema_differences) == []
        assert await connection.run_sync(table_names) == {*metadata.tables, "alembic_version"}


async def test_upgrade_twice_changes_nothing(engine: AsyncEngine) -> None:
    await upgrade(engine)
    await upgrade(engine)
    assert await current_revision(engine) == HEAD
    async with engine.connect() as connection:
        assert await connection.run_sync(schema_differences) == []


async def test_the_comparison_would_see_a_missing_index(engine: AsyncEngine) -> None:
    """The check above can fail: a schema that differs from schema.py is reported."""
    await upgrade(engine)
    async with engine.begin() as connection:
        await connection.execute(text("DROP INDEX ix_credentials_machine_type"))
    async with engine.connect() as connection:
        differences = await connection.run_sync(schema_differences)
    assert [d[0] for d in differences] == ["add_index"]


# -- from every earlier revision, with data -----------------------------------------------------


async def fill(engine: AsyncEngine) -> set[str]:
    """Rows in each table this revision has; returns the tables filled, and
    `machine_types.repositories` when that column was filled too."""
    async with engine.begin() as connection:
        tables = await connection.run_sync(table_names)
        await connection.execute(insert(filtered_manifests).values(**MANIFEST))
        if "machine_types" in tables:
            row: dict[str, Any] = {
                "name": "db-type",
                "features": ["cpu:skylake"],
                "mode": "best",
                "platforms": ["linux/amd64"],
                "description": "kept",
                "revision": 3,
                "config_managed": False,
                "created": datetime.now(UTC),
                "updated": datetime.now(UTC),
            }
            columns = await connection.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("machine_types")}
            )
            if "repositories" in columns:  # since 0003
                row["repositories"] = ["docker.io/library/*"]
                tables = {*tables, "machine_types.repositories"}
            await connection.execute(insert(machine_types).values(**row))
            await connection.execute(
                insert(credentials).values(
                    id="c0ffee",
                    machine_type="db-type",
                    login="db-login",
                    password_hash="$argon2id$kept",
                    config_managed=False,
                    created=datetime.now(UTC),
                )
            )
    return tables


async def check_kept(engine: AsyncEngine, tables: set[str]) -> None:
    async with engine.connect() as connection:
        (row,) = (await connection.execute(select(filtered_manifests))).all()
        kept = {key: row._mapping[key] for key in MANIFEST}
        assert {**kept, "content": bytes(kept["content"])} == MANIFEST
        # Made before 0004 knew when rows were served: dated by its creation.
        assert row.last_served == row.created
        if "machine_types" in tables:
            (machine_type,) = (await connection.execute(select(machine_types))).all()
            assert machine_type.name == "db-type" and machine_type.revision == 3
            assert machine_type.features == ["cpu:skylake"]
            assert machine_type.platforms == ["linux/amd64"]
            # A type from before 0003 pulls everything (no patterns); a later one keeps its own.
            had_patterns = "machine_types.repositories" in tables
            assert machine_type.repositories == (["docker.io/library/*"] if had_patterns else [])
            (credential,) = (await connection.execute(select(credentials))).all()
            assert (credential.login, credential.password_hash) == ("db-login", "$argon2id$kept")


@pytest.mark.parametrize("start", EARLIER)
async def test_upgrade_from_an_earlier_revision_keeps_the_data(
    engine: AsyncEngine, start: str
) -> None:
    await upgrade(engine, start)
    assert await current_revision(engine) == start
    tables = await fill(engine)
    await upgrade(engine)
    assert await current_revision(engine) == HEAD
    await check_kept(engine, tables)
    async with engine.connect() as connection:
        assert await connection.run_sync(schema_differences) == []
    # The upgraded database works for what came after: the management service uses it.
    service = ManagementService(engine)
    if "machine_types" in tables:
        assert [m.name for m in await service.list_machine_types()] == ["db-type"]
    await service.create_machine_type("test", "new-type", ["cpu:broadwell"])
    assert "new-type" in [m.name for m in await service.list_machine_types()]


async def test_database_of_the_first_release_is_adopted(tmp_path: Path) -> None:
    """The first release made filtered_manifests without alembic: it counts as revision 0001."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'first.db'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text(FIRST_RELEASE_DDL))
            await connection.execute(insert(filtered_manifests).values(**MANIFEST))
        await upgrade(engine)
        assert await current_revision(engine) == HEAD
        await check_kept(engine, {"filtered_manifests"})
        async with engine.connect() as connection:
            assert await connection.run_sync(schema_differences) == []
    finally:
        await engine.dispose()


async def test_downgrade_to_the_first_revision_and_back(engine: AsyncEngine) -> None:
    from alembic import command
    from alembic.config import Config

    await upgrade(engine)
    await fill(engine)

    def downgrade(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")

    async with engine.begin() as connection:
        await connection.run_sync(downgrade)
        assert await connection.run_sync(table_names) == {"filtered_manifests", "alembic_version"}
    await upgrade(engine)
    await check_kept(engine, {"filtered_manifests"})


# -- metahub db upgrade -----------------------------------------------------------------------


def db_upgrade(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAHUB_")}
    return subprocess.run(
        [sys.executable, "-m", "metahub", "db", "upgrade", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def write_config(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "metahub.yaml"
    config = {"upstream": {"path": "layout"}, "data_dir": "data", **extra}
    path.write_text(yaml.safe_dump(config))
    return path


async def test_db_upgrade_command_on_sqlite(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    first = db_upgrade(config)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"database is at revision {HEAD}"
    database = tmp_path / "data" / "metahub.db"  # relative to the config file
    assert database.is_file()
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(schema_differences) == []
    finally:
        await engine.dispose()
    again = db_upgrade(config)
    assert again.returncode == 0 and again.stdout == first.stdout


async def test_db_upgrade_command_from_the_first_revision(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    try:
        await upgrade(engine, "0001")
        await fill(engine)
        config = write_config(tmp_path, database={"url": f"sqlite+aiosqlite:///{database}"})
        result = db_upgrade(config)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"database is at revision {HEAD}"
        assert await current_revision(engine) == HEAD
        await check_kept(engine, {"filtered_manifests"})
        assert not (tmp_path / "data" / "metahub.db").exists()  # database.url, not the default
    finally:
        await engine.dispose()


async def test_db_upgrade_command_on_postgresql(tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.create_database(f"cli{uuid.uuid4().hex[:12]}")
    result = db_upgrade(write_config(tmp_path, database={"url": url}))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"database is at revision {HEAD}"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(schema_differences) == []
    finally:
        await engine.dispose()


def test_db_upgrade_command_with_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "metahub.yaml"
    path.write_text(yaml.safe_dump({"upstream": {"path": "x"}, "database": {"url": "mysql://x"}}))
    result = db_upgrade(path)
    assert result.returncode != 0
    assert "database.url" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
