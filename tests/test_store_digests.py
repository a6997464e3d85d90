"""The filtered-digest store shared through the database, and kept off the warm path.

Two MetaHubs on one database (SQLite in a temp dir, or a real PostgreSQL server), as two
workers or two replicas are: a filtered index one of them made is served by digest by the
other, which never resolved the tag. Once warm, pulling the tag, the filtered index by digest
and the chosen image by digest sends no statement to the filtered-digest table.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import create_async_engine

from metahub import errors
from metahub.auth.tokens import Principal
from metahub.config import parse_config
from metahub.hub import Hub
from metahub.oci.layout_writer import LayoutWriter
from metahub.serving.manifests import ServedManifest
from metahub.store.database import open_database
from metahub.store.digests import FilteredDigestStore, StoredManifest
from metahub.store.schema import filtered_manifests
from tests.support.oci import AMD64, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, sha256
from tests.support.postgres import PostgresServer
from tests.support.servers import free_port

REPOSITORY = "hpc/app"
SKY = Principal("sky", "sky")


async def serve(
    hub: Hub, name: str, reference: str, principal: Principal, *, accepts_index: bool = True
) -> ServedManifest:
    """What a request authenticated as `principal` is served, resolved as the registry does."""
    profile = hub.profiles.for_principal(principal)
    return await hub.manifests.get(name, reference, profile, accepts_index=accepts_index)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An index with a haswell, a skylake and a generic amd64 image; label -> descriptor."""
    path = tmp_path_factory.mktemp("digests-layout")
    writer = LayoutWriter(path)
    descriptors: dict[str, Any] = {}
    builds = [("haswell", ["cpu:haswell"]), ("skylake", ["cpu:skylake"]), ("generic", [])]
    for label, features in builds:
        config = writer.add_json({**AMD64, "label": label}, OCI_CONFIG)
        document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}
        platform = {**AMD64, "features": features} if features else dict(AMD64)
        descriptor = writer.add_json(document, OCI_MANIFEST)
        descriptors[label] = {**descriptor, "platform": platform}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(descriptors.values())}
    writer.tag(f"{REPOSITORY}:latest", writer.add_json(index, OCI_INDEX))
    writer.save()
    return {"path": path, **descriptors}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"digests_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def start_hub(
    layout: dict[str, Any], database_url: str, tmp_path: Path
) -> AsyncIterator[Callable[[], Any]]:
    """Starts MetaHubs that share one database (each with its own data dir and caches)."""
    started: list[Hub] = []

    async def start(**database: Any) -> Hub:
        settings = parse_config(
            {
                "upstream": {"path": str(layout["path"])},
                "data_dir": str(tmp_path / f"data-{len(started)}"),
                "database": {"url": database_url, **database},
                "machine_types": [
                    {"name": "sky", "login": "sky", "password": "pw", "features": ["cpu:skylake"]}
                ],
            }
        )
        hub = await Hub.start(settings)
        started.append(hub)
        return hub

    yield start
    for hub in started:
        await hub.close()


def count_store_statements(hub: Hub) -> list[str]:
    """Every statement this hub sends to the filtered-digest table from now on."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        statement = str(args[2])
        if "filtered_manifests" in statement:
            seen.append(statement)

    event.listen(hub.engine.sync_engine, "before_cursor_execute", record)
    writer = hub.manifests.store.writer  # a SQLite file's new rows go past the engine
    if writer is not None:
        insert = writer.insert

        async def counted(statement: str, values: Sequence[object]) -> None:
            record(None, None, statement)
            await insert(statement, values)

        writer.insert = counted  # type: ignore[method-assign]
    return seen


async def test_a_filtered_index_made_by_one_is_served_by_digest_by_another(
    start_hub: Callable[[], Any], layout: dict[str, Any]
) -> None:
    first: Hub = await start_hub()
    second: Hub = await start_hub()
    served = await serve(first, REPOSITORY, "latest", SKY)
    assert [m["digest"] for m in json.loads(served.data)["manifests"]] == [
        layout["skylake"]["digest"]
    ]
    statements = count_store_statements(second)
    again = await serve(second, REPOSITORY, served.digest, SKY)
    assert (again.data, again.media_type, again.digest) == (served.data, OCI_INDEX, served.digest)
    assert sha256(again.data) == served.digest
    assert len(statements) == 1  # looked up in the database: it never filtered this tag itself


async def test_a_warm_pull_sends_nothing_to_the_store(
    start_hub: Callable[[], Any], layout: dict[str, Any]
) -> None:
    hub: Hub = await start_hub()

    async def pull() -> None:
        index = await serve(hub, REPOSITORY, "latest", SKY)
        await serve(hub, REPOSITORY, index.digest, SKY)
        chosen = await serve(hub, REPOSITORY, layout["skylake"]["digest"], SKY)
        assert chosen.digest == layout["skylake"]["digest"] == sha256(chosen.data)

    await pull()
    statements = count_store_statements(hub)
    for _ in range(3):
        await pull()
    assert statements == []


@pytest.fixture
async def unreachable_store() -> AsyncIterator[FilteredDigestStore]:
    """A store whose PostgreSQL is down: nothing listens on its port."""
    engine = create_async_engine(f"postgresql+asyncpg://metahub:secret@127.0.0.1:{free_port()}/db")
    yield FilteredDigestStore(engine)
    await engine.dispose()


async def test_a_lookup_the_database_cannot_answer_is_a_503_naming_it(
    unreachable_store: FilteredDigestStore,
) -> None:
    digest = sha256(b"never stored")
    with pytest.raises(errors.DatabaseUnavailable) as raised:
        await unreachable_store.get(REPOSITORY, digest)
    assert raised.value.status == 503
    assert "postgresql at 127.0.0.1:" in raised.value.message
    assert digest in raised.value.message
    assert "secret" not in raised.value.message


async def test_a_filtered_index_is_served_by_digest_from_memory_when_it_cannot_be_stored(
    unreachable_store: FilteredDigestStore, caplog: pytest.LogCaptureFixture
) -> None:
    content = b'{"schemaVersion":2}'
    manifest = StoredManifest(REPOSITORY, OCI_INDEX, content)
    await unreachable_store.put(
        sha256(content), manifest, machine_type="sky", upstream_digest=sha256(b"upstream")
    )
    assert "could not store filtered index" in caplog.text
    assert await unreachable_store.get(REPOSITORY, sha256(content)) == manifest


async def test_two_processes_storing_the_same_filtered_index_keep_one_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers on one SQLite file make the same index: the second insert meets the first
    row, and still serves the index, with nothing logged as a failure."""
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'metahub.db'}")
    first, second = FilteredDigestStore(engine), FilteredDigestStore(engine)
    try:
        content = b'{"schemaVersion":2,"manifests":[]}'
        manifest = StoredManifest(REPOSITORY, OCI_INDEX, content)
        for store in (first, second):
            await store.put(
                sha256(content), manifest, machine_type="sky", upstream_digest=sha256(b"up")
            )
        assert "could not store" not in caplog.text
        third = FilteredDigestStore(engine)  # knows nothing in memory: reads the row
        assert await third.get(REPOSITORY, sha256(content)) == manifest
        async with engine.connect() as connection:
            rows = (await connection.execute(select(filtered_manifests))).all()
        assert [(row.digest, row.machine_type, row.content) for row in rows] == [
            (sha256(content), "sky", content)
        ]
    finally:
        for store in (first, second):
            await store.close()
        await engine.dispose()


# --- retention ----------------------------------------------------------------------------------

RETAINED = {"filtered_retention_days": 7, "last_served_interval": 3600}


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (MetaHub writes UTC), PostgreSQL aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def last_served(hub: Hub) -> dict[str, datetime | None]:
    async with hub.engine.connect() as connection:
        rows = await connection.execute(
            select(filtered_manifests.c.digest, filtered_manifests.c.last_served)
        )
        return {row.digest: as_utc(row.last_served) if row.last_served else None for row in rows}


async def date_rows(hub: Hub, digest: str | None, moment: datetime | None) -> None:
    """Set when rows were last served (all rows, or one), as if that long had passed."""
    statement = update(filtered_manifests).values(last_served=moment)
    if digest is not None:
        statement = statement.where(filtered_manifests.c.digest == digest)
    async with hub.engine.begin() as connection:
        await connection.execute(statement)


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def test_retention_is_off_by_default(start_hub: Callable[..., Any]) -> None:
    hub: Hub = await start_hub()
    assert hub.manifests.store.retention is None
    index = await serve(hub, REPOSITORY, "latest", SKY)
    await date_rows(hub, None, days_ago(400))
    assert await hub.manifests.store.prune() == 0
    assert await hub.manifests.store.flush_served() == 0
    assert list(await last_served(hub)) == [index.digest]


async def test_a_new_row_is_dated_when_it_is_made(start_hub: Callable[..., Any]) -> None:
    hub: Hub = await start_hub(**RETAINED)
    before = datetime.now(UTC) - timedelta(seconds=5)
    index = await serve(hub, REPOSITORY, "latest", SKY)
    dated = (await last_served(hub))[index.digest]
    assert dated is not None and before <= dated <= datetime.now(UTC) + timedelta(seconds=5)


async def test_serving_notes_in_memory_and_one_flush_writes_the_dates(
    start_hub: Callable[..., Any], layout: dict[str, Any]
) -> None:
    hub: Hub = await start_hub(**RETAINED)
    index = await serve(hub, REPOSITORY, "latest", SKY)
    await date_rows(hub, index.digest, days_ago(5))
    statements = count_store_statements(hub)
    for _ in range(50):  # warm pulls: by tag (filtered cache) and by digest (store memory)
        assert (await serve(hub, REPOSITORY, "latest", SKY)).digest == index.digest
        await serve(hub, REPOSITORY, index.digest, SKY)
    assert statements == []  # no write per request
    assert await hub.manifests.store.flush_served() == 1
    assert [s.split()[0] for s in statements] == ["UPDATE"]  # one key, one statement
    assert await hub.manifests.store.flush_served() == 0  # nothing served since
    assert len(statements) == 1
    dated = (await last_served(hub))[index.digest]
    assert dated is not None and dated > datetime.now(UTC) - timedelta(minutes=1)


async def test_prune_deletes_only_rows_not_served_within_the_retention(
    start_hub: Callable[..., Any], layout: dict[str, Any]
) -> None:
    hub: Hub = await start_hub(**RETAINED)
    index = await serve(hub, REPOSITORY, "latest", SKY)
    # A second row, as another machine type's filtered index would be.
    stale_content = b'{"schemaVersion":2,"manifests":[]}'
    await hub.manifests.store.put(
        sha256(stale_content),
        StoredManifest(REPOSITORY, OCI_INDEX, stale_content),
        machine_type="gone",
        upstream_digest=sha256(b"upstream"),
    )
    await date_rows(hub, index.digest, days_ago(6.5))  # within 7 days: kept
    await date_rows(hub, sha256(stale_content), days_ago(7.5))
    assert await hub.manifests.store.prune() == 1
    assert list(await last_served(hub)) == [index.digest]
    # Gone from the database and from this process's memory: a fresh replica and this one
    # both find nothing under that digest.
    other: Hub = await start_hub(**RETAINED)
    for each in (hub, other):
        with pytest.raises(errors.ManifestUnknown):
            await serve(each, REPOSITORY, sha256(stale_content), SKY)
    # A row made before the column existed has no date: its creation counts.
    await date_rows(hub, index.digest, None)
    assert await hub.manifests.store.prune() == 0
    assert await hub.manifests.store.prune(now=datetime.now(UTC) + timedelta(days=8)) == 1
    assert await last_served(hub) == {}


async def test_a_pruned_index_still_served_by_a_replica_is_written_back(
    start_hub: Callable[..., Any],
) -> None:
    serving: Hub = await start_hub(**RETAINED)
    pruning: Hub = await start_hub(**RETAINED)
    index = await serve(serving, REPOSITORY, "latest", SKY)
    await date_rows(pruning, index.digest, days_ago(30))
    assert await pruning.manifests.store.prune() == 1
    # The serving replica still has it cached and serves the tag warm: its next flush finds
    # no row to date and writes the index back, so a third replica can serve it by digest.
    assert (await serve(serving, REPOSITORY, "latest", SKY)).digest == index.digest
    assert await serving.manifests.store.flush_served() == 0
    third: Hub = await start_hub(**RETAINED)
    again = await serve(third, REPOSITORY, index.digest, SKY)
    assert sha256(again.data) == index.digest
    assert list(await last_served(third)) == [index.digest]


async def test_closing_writes_the_marks_noted_since_the_last_flush(
    start_hub: Callable[..., Any],
) -> None:
    hub: Hub = await start_hub(**RETAINED)
    index = await serve(hub, REPOSITORY, "latest", SKY)
    await date_rows(hub, index.digest, days_ago(3))
    await serve(hub, REPOSITORY, "latest", SKY)
    observer: Hub = await start_hub(**RETAINED)
    await hub.close()
    dated = (await last_served(observer))[index.digest]
    assert dated is not None and dated > days_ago(1)


async def test_a_database_that_cannot_be_reached_keeps_the_marks(
    unreachable_store: FilteredDigestStore, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable_store.retention = timedelta(days=7)
    content = b'{"schemaVersion":2}'
    unreachable_store.mark_served_filtered(
        sha256(content),
        StoredManifest(REPOSITORY, OCI_INDEX, content),
        machine_type="sky",
        upstream_digest=sha256(b"upstream"),
    )
    assert await unreachable_store.flush_served() == 0
    assert "could not record when 1 filtered indexes were served" in caplog.text
    assert await unreachable_store.prune() == 0
    assert "could not prune the filtered-digest store" in caplog.text
    # Kept for the next flush.
    assert await unreachable_store.flush_served() == 0
    assert caplog.text.count("could not record when 1 filtered") == 2
