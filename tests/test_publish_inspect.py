"""`metahub inspect` against a real registry and through a real `metahub serve`.

The raw bytes are compared with what skopeo (an independent client) reads; the table's
digests, sizes and features with what the registry serves, hashed here.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metahub.demo.images import FeatureImage, build_feature_images
from tests.support.metahub_server import MetaHubServer
from tests.support.oci import sha256
from tests.support.push import Pusher
from tests.support.servers import RegistryServer, skopeo

REPOSITORY = "qnib/plain-featuretest"
BUILDS = (
    FeatureImage("cpu-skylake", "skylake", ("cpu:skylake",), ">> skylake"),
    FeatureImage("cpu-broadwell", "broadwell", ("cpu:broadwell", "nvcap:5.2"), ">> broadwell"),
)
LOGINS = {"type-skylake": ["cpu:skylake"], "type-broadwell": ["cpu:broadwell", "nvcap:5.2"]}


@dataclass(frozen=True)
class Setup:
    registry: RegistryServer
    hub: MetaHubServer
    work: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("publish-inspect")
    with RegistryServer(work / "registry") as registry:
        build_feature_images(work / "layout", REPOSITORY, BUILDS)
        pusher = Pusher(registry.url)
        pusher.layout(work / "layout", REPOSITORY)
        pusher.close()
        (work / "hub").mkdir()
        config = {
            "upstream": {"url": registry.url},
            "machine_types": [
                {"name": login, "login": login, "password": login, "features": features}
                for login, features in LOGINS.items()
            ],
        }
        with MetaHubServer(work / "hub", config) as hub:
            yield Setup(registry, hub, work)


def inspect(*args: str, docker_config: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONFIG"}
    env["DOCKER_CONFIG"] = str(docker_config or "/nonexistent-docker-config")
    env["COLUMNS"] = "250"
    return subprocess.run(
        [sys.executable, "-m", "metahub", "inspect", *args],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def skopeo_raw(ref: str, creds: str | None = None) -> bytes:
    args = ["inspect", "--raw", "--tls-verify=false", *(["--creds", creds] if creds else [])]
    result = skopeo(*args, f"docker://{ref}")
    assert result.returncode == 0, result.stderr
    return result.stdout.encode()


@pytest.mark.e2e
def test_raw_is_the_registry_bytes_exactly(setup: Setup) -> None:
    ref = f"{setup.registry.host}/{REPOSITORY}:latest"
    result = inspect("--raw", ref)
    assert result.returncode == 0, result.stderr
    assert result.stdout == skopeo_raw(ref)


@pytest.mark.e2e
def test_an_index_is_shown_as_a_table_of_its_entries(setup: Setup) -> None:
    ref = f"{setup.registry.host}/{REPOSITORY}:latest"
    result = inspect(ref)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    data = skopeo_raw(ref)
    assert f"Digest:     {sha256(data)}" in out
    assert "Media type: application/vnd.oci.image.index.v1+json" in out
    assert f"Size:       {len(data)}" in out
    rows = [line for line in out.splitlines() if "sha256:" in line and "│" in line]
    entries = json.loads(data)["manifests"]
    assert len(rows) == len(entries) == 2
    for row, entry in zip(rows, entries, strict=True):
        cells = [cell.strip() for cell in row.strip("│ ").split("│")]
        assert cells == [
            str(entries.index(entry)),
            "linux/amd64",
            ", ".join(entry["platform"]["features"]),
            entry["digest"],
            str(entry["size"]),
            entry["mediaType"],
        ]


@pytest.mark.e2e
def test_a_single_manifest_shows_its_platform_config_and_layers(setup: Setup) -> None:
    ref = f"{setup.registry.host}/{REPOSITORY}:cpu-skylake"
    result = inspect(ref)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    manifest = json.loads(skopeo_raw(ref))
    assert "Platform:   linux/amd64" in out
    assert f"Config:     {manifest['config']['digest']}" in out
    for layer in manifest["layers"]:
        assert layer["digest"] in out and str(layer["size"]) in out


@pytest.mark.e2e
@pytest.mark.parametrize("login", sorted(LOGINS))
def test_through_metahub_it_shows_what_the_login_receives(setup: Setup, login: str) -> None:
    ref = f"{setup.hub.host}/{REPOSITORY}:latest"
    creds = f"{login}:{login}"
    raw = inspect("--raw", "--creds", creds, ref)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == skopeo_raw(ref, creds)
    entries = json.loads(raw.stdout)["manifests"]
    assert [e["platform"]["features"] for e in entries] == [LOGINS[login]]
    table = inspect("--creds", creds, ref)
    assert table.returncode == 0, table.stderr
    out = table.stdout.decode()
    assert f"Digest:     {sha256(raw.stdout)}" in out
    assert entries[0]["digest"] in out
    others = [b for b in BUILDS if list(b.features) != LOGINS[login]]
    for build in others:
        assert ", ".join(build.features) not in out


@pytest.mark.e2e
def test_through_metahub_with_the_login_from_docker_config(setup: Setup, tmp_path: Path) -> None:
    login = "type-broadwell"
    auth = base64.b64encode(f"{login}:{login}".encode()).decode()
    config = {"auths": {f"http://{setup.hub.host}": {"auth": auth}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    ref = f"{setup.hub.host}/{REPOSITORY}:latest"
    result = inspect("--raw", ref, docker_config=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == skopeo_raw(ref, f"{login}:{login}")
    anonymous = inspect("--raw", ref)
    assert anonymous.returncode == 1
    assert b"token service" in anonymous.stderr
    assert b"refused an anonymous login" in anonymous.stderr


def test_an_unknown_reference_says_so(setup: Setup) -> None:
    result = inspect(f"{setup.registry.host}/{REPOSITORY}:nope")
    assert result.returncode == 1
    assert f"{REPOSITORY}:nope is not in registry {setup.registry.host}".encode() in result.stderr
