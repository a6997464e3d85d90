"""ManagementService announces each committed change; the directory reloads on those it keeps.

A real SQLite database in a temp dir: what a listener is told is checked against what a fresh
read of the database shows at that moment, so an announcement before the commit would fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from metahub import errors
from metahub.config import MachineTypeConfig
from metahub.management.directory import Directory
from metahub.management.records import Change
from metahub.management.service import ManagementService
from metahub.store.database import default_url, open_database

ACTOR = "tester"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[ManagementService]:
    engine = await open_database(default_url(tmp_path))
    try:
        yield ManagementService(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def told(service: ManagementService) -> list[Change]:
    changes: list[Change] = []

    async def listener(change: Change) -> None:
        changes.append(change)

    service.on_change(listener)
    return changes


async def test_every_change_is_announced_by_its_audit_name(
    service: ManagementService, told: list[Change]
) -> None:
    await service.create_machine_type(ACTOR, "sky", ["cpu:skylake"])
    await service.update_machine_type(ACTOR, "sky", features=["cpu:haswell"])
    issued = await service.create_credential(ACTOR, "sky", login="sky-1")
    await service.rotate_credential(ACTOR, issued.id)
    await service.expire_credential(ACTOR, issued.id, datetime.now(UTC) + timedelta(days=1))
    await service.revoke_credential(ACTOR, issued.id)
    await service.create_admin(ACTOR, "root", "a long enough password")
    token = await service.create_admin_token(ACTOR, "root", "ci")
    await service.revoke_admin_token(ACTOR, token.id)
    await service.delete_admin(ACTOR, "root")
    await service.delete_machine_type(ACTOR, "sky")
    assert [(c.action, c.target) for c in told] == [
        ("machine_type.create", "sky"),
        ("machine_type.update", "sky"),
        ("credential.create", "sky-1"),
        ("credential.rotate", "sky-1"),
        ("credential.expire", "sky-1"),
        ("credential.revoke", "sky-1"),
        ("admin.create", "root"),
        ("admin_token.create", "root"),
        ("admin_token.revoke", token.id),
        ("admin.delete", "root"),
        ("machine_type.delete", "sky"),
    ]
    audited = [(e.action, e.target) for e in reversed(await service.audit())]
    assert audited == [(c.action, c.target) for c in told]


async def test_a_listener_sees_the_change_committed(service: ManagementService) -> None:
    seen: list[list[str]] = []

    async def listener(change: Change) -> None:
        seen.append([c.login for c in await service.list_credentials()])

    service.on_change(listener)
    await service.create_machine_type(ACTOR, "sky", [])
    await service.create_credential(ACTOR, "sky", login="sky-1")
    assert seen == [[], ["sky-1"]]


async def test_what_changes_nothing_is_not_announced(
    service: ManagementService, told: list[Change]
) -> None:
    await service.create_machine_type(ACTOR, "sky", ["cpu:skylake"])
    issued = await service.create_credential(ACTOR, "sky", login="sky-1")
    await service.revoke_credential(ACTOR, issued.id)
    told.clear()
    await service.update_machine_type(ACTOR, "sky", features=["cpu:skylake"])
    await service.revoke_credential(ACTOR, issued.id)  # revoked already
    with pytest.raises(errors.Conflict):
        await service.create_machine_type(ACTOR, "sky", [])
    with pytest.raises(errors.Conflict):
        await service.rotate_credential(ACTOR, issued.id)
    with pytest.raises(errors.InvalidRequest):
        await service.create_credential(ACTOR, "sky", login="no:colons")
    assert told == []


async def test_a_config_import_is_announced(service: ManagementService, told: list[Change]) -> None:
    configured = [MachineTypeConfig(name="cfg", login="cfg", password="cfg-password")]
    await service.import_config(configured)
    assert [c.subject for c in told] == ["config"]


async def test_the_directory_reloads_on_machine_types_and_credentials_only(
    service: ManagementService,
) -> None:
    directory = Directory(service.engine, [])
    await directory.load()
    service.on_change(directory.changed)
    loads = 0
    load = directory.load

    async def counted() -> None:
        nonlocal loads
        loads += 1
        await load()

    directory.load = counted  # type: ignore[method-assign]
    await service.create_machine_type(ACTOR, "sky", ["cpu:skylake"])
    assert "sky" in directory.profiles
    issued = await service.create_credential(ACTOR, "sky", login="sky-1")
    assert directory.account("sky-1") is not None
    await service.revoke_credential(ACTOR, issued.id)
    assert directory.account("sky-1") is None
    assert loads == 3
    await service.create_admin(ACTOR, "root", "a long enough password")
    await service.create_admin_token(ACTOR, "root", "ci")
    assert loads == 3  # admins are not the hot path's business
