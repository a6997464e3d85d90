"""The filtered-digest store shared through the database, and kept off the warm path.

Two MetaHubs on one database (SQLite in a temp dir, or a real PostgreSQL server), as two
workers or two replicas are: a filtered index one of them made is served by digest by the
other, which never resolved the tag. Once warm, pulling the tag, the filtered index by digest
and the chosen image by digest sends no statement to the filtered-digest table.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from metahub import errors
from metahub.auth.tokens import Principal
from metahub.config import parse_config
from metahub.hub import Hub
from metahub.oci.layout_writer import LayoutWriter
from metahub.serving.manifests import ServedManifest
from metahub.store.digests import FilteredDigestStore, StoredManifest
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

    async def start() -> Hub:
        settings = parse_config(
            {
                "upstream": {"path": str(layout["path"])},
                "data_dir": str(tmp_path / f"data-{len(started)}"),
                "database": {"url": database_url},
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
