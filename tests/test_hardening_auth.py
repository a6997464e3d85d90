"""The token-signing key stays private, and a token MetaHub did not write is refused.

A real `metahub serve` (and a real `Hub.start`): the key is read the way a local attacker would,
with sqlite3 from the data directory, to forge the token a review found accepted.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from metahub.config import parse_config
from metahub.hub import Hub
from tests.support.metahub_server import MetaHubServer

MACHINE_TYPE = {"name": "cpu", "login": "cpu-login", "password": "pw", "features": ["cpu:zen2"]}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_restored() -> Iterator[None]:
    """Start-up sets the process umask: put it back for the tests that follow."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaHubServer]:
    tmp = tmp_path_factory.mktemp("hardening")
    (tmp / "layout").mkdir()
    config = {"upstream": {"path": str(tmp / "layout")}, "machine_types": [MACHINE_TYPE]}
    with MetaHubServer(tmp, config) as hub:
        yield hub


def signing_key_of(data_dir: Path) -> bytes:
    with sqlite3.connect(data_dir / "metahub.db") as connection:
        (key,) = connection.execute("SELECT key FROM signing_keys ORDER BY id LIMIT 1").fetchone()
    return bytes(key)


def test_the_data_directory_and_database_are_private(server: MetaHubServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v2/", auth=("cpu-login", "pw")).status_code == 200
    data_dir = server.tmp / "data"
    assert mode_of(data_dir) == 0o700
    files = sorted(p.name for p in data_dir.iterdir() if p.is_file())
    assert "metahub.db" in files
    for name in files:
        assert mode_of(data_dir / name) == 0o600, name


def forged(key: bytes, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "metahub",
        "aud": "metahub",
        "sub": "intruder",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 365 * 86400,
        "jti": "forged",
        "access": [{"type": "repository", "name": "library/app", "actions": ["pull"]}],
        **claims,
    }
    return jwt.encode(payload, key, algorithm="HS256")


def test_a_token_without_the_claims_metahub_writes_is_refused(server: MetaHubServer) -> None:
    key = signing_key_of(server.tmp / "data")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        issued = client.get("/token", auth=("cpu-login", "pw")).json()["token"]
        headers = {"Authorization": f"Bearer {issued}"}
        assert client.get("/v2/", headers=headers).status_code == 200  # the key is the right one
        for token in (
            forged(key),  # no mt, no cid: would read as unfiltered and unrevocable
            forged(key, mt="cpu"),  # no cid
            forged(key, cid=None),  # no mt
        ):
            response = client.get("/v2/", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401
            assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_an_absurdly_long_bearer_token_is_refused(server: MetaHubServer) -> None:
    key = signing_key_of(server.tmp / "data")
    complete = {"mt": "cpu", "cid": None, "cv": None}
    grants = [{"type": "repository", "name": f"r{n:04}", "actions": ["pull"]} for n in range(200)]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        short = forged(key, **complete)
        assert client.get("/v2/", headers={"Authorization": f"Bearer {short}"}).status_code == 200
        long = forged(key, **complete, access=grants)
        assert len(long) > 8 * 1024
        response = client.get("/v2/", headers={"Authorization": f"Bearer {long}"})
    assert response.status_code == 401


async def test_start_up_tightens_an_open_data_directory(
    tmp_path: Path, umask_restored: None, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    database = data_dir / "metahub.db"
    sqlite3.connect(database).close()
    database.chmod(0o644)
    settings = parse_config(
        {
            "upstream": {"path": str(tmp_path / "layout")},
            "data_dir": str(data_dir),
            "machine_types": [MACHINE_TYPE],
        }
    )
    with caplog.at_level(logging.WARNING):
        hub = await Hub.start(settings)
    try:
        assert mode_of(data_dir) == 0o700
        assert mode_of(database) == 0o600
        for name in ("metahub.db-wal", "metahub.db-shm"):  # made by SQLite after the tightening
            if (data_dir / name).exists():
                assert mode_of(data_dir / name) == 0o600
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(str(data_dir) in w and "0755" in w for w in warned)
        assert any(str(database) in w and "0644" in w for w in warned)
    finally:
        await hub.close()
