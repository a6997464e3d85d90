"""Pytest fixtures for the real servers in `tests.support.servers`.

Load with `pytest_plugins = ["tests.support.fixtures"]` in the top-level conftest. The
daemons are session-scoped because they take a second or more to start; anything that holds
per-test state (registries, Podman stores, docker client configs) is function-scoped.
Session-scoped daemons keep their image stores between tests, so a test that must see a
fetch reach its registry should use a repository name no other test uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metahub.demo.images import build_demo_layout
from tests.support.admin_hub import ADMIN, ADMIN_PASSWORD, Hub, admin_hub_config
from tests.support.inprocess import InProcessHub
from tests.support.postgres import PostgresServer
from tests.support.servers import Containerd, Dockerd, Podman, RegistryServer, allow_runtimes

REGISTRY_USER = "tester"
REGISTRY_PASSWORD = "s3cret-pass"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Only `e2e` tests may drive container runtimes, their fixtures included: set before any."""
    allow_runtimes(item.get_closest_marker("e2e") is not None)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """An empty registry without auth."""
    with RegistryServer(tmp_path / "registry") as server:
        yield server


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """An empty registry that wants REGISTRY_USER / REGISTRY_PASSWORD (basic auth)."""
    users = {REGISTRY_USER: REGISTRY_PASSWORD}
    with RegistryServer(tmp_path / "auth-registry", htpasswd=users) as server:
        yield server


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """One dockerd for the session."""
    with Dockerd(tmp_path_factory.mktemp("dockerd")) as daemon:
        yield daemon


@pytest.fixture
def docker_config(tmp_path: Path) -> Path:
    """A fresh docker client config dir, so logins never carry over between tests."""
    path = tmp_path / "docker-config"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """One containerd for the session."""
    with Containerd(tmp_path_factory.mktemp("containerd")) as daemon:
        yield daemon


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    """A Podman with an empty store (no daemon, so a fresh one per test is cheap)."""
    with Podman(tmp_path / "podman") as instance:
        yield instance


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; `postgres.create_database(name)` gives a test
    its own database (and URL), `postgres.url` is a shared one."""
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def demo_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's OCI layout (qnib/bench), built once: tests serve it read-only."""
    path = tmp_path_factory.mktemp("demo") / "layout"
    build_demo_layout(path)
    return path


@pytest.fixture(scope="module")
def hub_kind() -> Any:
    """How a module's hubs run: in this process. A module that needs real sockets (a browser,
    docker) overrides this fixture with `MetaHubServer`."""
    return InProcessHub


@pytest.fixture(scope="module")
def admin_hub(
    hub_kind: Any, demo_layout: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hub]:
    """The hub of tests/support/admin_hub.py, one per module, with its admin created.

    Failed logins are tested on hubs of their own; here they must not add up to a 429.
    """
    config = admin_hub_config(demo_layout, login_limit={"failures": 100000})
    hub: Hub = hub_kind(tmp_path_factory.mktemp("admin-hub"), config)
    with hub:
        hub.create_admin(ADMIN, ADMIN_PASSWORD)
        yield hub
