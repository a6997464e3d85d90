"""The seed's example, end to end: real runtimes pull through MetaHub from a real registry.

docker, containerd (`ctr`), podman and skopeo each log in as one of the four machine types and
must get, and run, the build for that machine type. Expected digests come from the upstream
registry directly; expected output lines from the demo's own definition of each build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from metahub.demo.images import AMD64_VARIANTS, build_demo_layout
from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher
from tests.support.servers import Containerd, Dockerd, Podman, RegistryServer, skopeo

pytestmark = pytest.mark.e2e

UPSTREAM_AUTH = ("upstream-user", "upstream-secret")
BY_TAG = {variant.tag: variant for variant in AMD64_VARIANTS}
# login -> the tag of the build it must get, as in the seed's table.
TABLE = {
    "qnib-type1": "cpu-broadwell",
    "qnib-type2": "cpu-skylake",
    "qnib-type3": "cpu-skylake",
    "qnib-type4": "cpu_broadwell-nvcap_52",
}
FEATURES = {
    "qnib-type1": ["cpu:broadwell"],
    "qnib-type2": ["cpu:skylake"],
    "qnib-type3": ["cpu:coffeelake"],
    "qnib-type4": ["cpu:broadwell", "nvcap:5.2"],
}


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MetaHubServer, dict[str, str]]]:
    work = tmp_path_factory.mktemp("e2e")
    with RegistryServer(work / "upstream", htpasswd=dict([UPSTREAM_AUTH])) as upstream:
        build_demo_layout(work / "layout")
        pusher = Pusher(upstream.url, UPSTREAM_AUTH)
        digests = pusher.layout(work / "layout", "qnib/bench")
        pusher.close()
        (work / "hub").mkdir()
        config = {
            "upstream": {
                "url": upstream.url,
                "username": UPSTREAM_AUTH[0],
                "password": UPSTREAM_AUTH[1],
            },
            "machine_types": [
                {
                    "name": login.removeprefix("qnib-"),
                    "login": login,
                    "password": login,
                    "features": features,
                }
                for login, features in FEATURES.items()
            ],
        }
        with MetaHubServer(work / "hub", config) as hub:
            yield hub, digests


def expected_line(login: str) -> str:
    return BY_TAG[TABLE[login]].message


@pytest.mark.parametrize("login", sorted(TABLE))
def test_docker_login_and_run(setup, dockerd: Dockerd, tmp_path: Path, login: str):
    hub, _ = setup
    config = tmp_path / "docker"
    config.mkdir()
    dockerd.login(hub.host, login, login, config).check_returncode()
    result = dockerd.run(f"{hub.host}/qnib/bench", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected_line(login)


def test_docker_login_with_a_wrong_password_fails(setup, dockerd: Dockerd, tmp_path: Path):
    hub, _ = setup
    result = dockerd.login(hub.host, "qnib-type1", "wrong", tmp_path)
    assert result.returncode != 0
    assert "unauthorized" in (result.stderr + result.stdout).lower()


def test_docker_pulls_by_the_filtered_digest(setup, dockerd: Dockerd, tmp_path: Path):
    hub, digests = setup
    with httpx.Client(base_url=hub.url, auth=("qnib-type2", "qnib-type2")) as http:
        served = http.get("/v2/qnib/bench/manifests/latest")
    digest = served.headers["docker-content-digest"]
    assert digest == "sha256:" + hashlib.sha256(served.content).hexdigest()
    assert digest != digests["latest"]
    config = tmp_path / "docker"
    config.mkdir()
    dockerd.login(hub.host, "qnib-type2", "qnib-type2", config).check_returncode()
    result = dockerd.run(f"{hub.host}/qnib/bench@{digest}", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected_line("qnib-type2")


@pytest.mark.parametrize("login", sorted(TABLE))
def test_containerd_pull_and_run(setup, containerd: Containerd, login: str):
    hub, _ = setup
    ref = f"{hub.host}/qnib/bench:latest"
    pulled = containerd.pull(ref, login, login)
    assert pulled.returncode == 0, pulled.stderr
    result = containerd.run(ref)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected_line(login)


def test_containerd_refuses_a_wrong_password(setup, containerd: Containerd):
    hub, _ = setup
    pulled = containerd.pull(f"{hub.host}/qnib/bench:latest", "qnib-type1", "wrong")
    assert pulled.returncode != 0


@pytest.mark.parametrize("login", sorted(TABLE))
def test_podman_pull_and_run(setup, podman: Podman, login: str):
    hub, _ = setup
    ref = f"{hub.host}/qnib/bench:latest"
    pulled = podman.pull(ref, f"{login}:{login}")
    assert pulled.returncode == 0, pulled.stderr
    result = podman.run(ref)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected_line(login)


@pytest.mark.parametrize("login", sorted(TABLE))
def test_skopeo_copy_gets_the_chosen_image(setup, tmp_path: Path, login: str):
    hub, digests = setup
    target = tmp_path / "copy"
    result = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        f"{login}:{login}",
        "--override-arch",
        "amd64",
        "--override-os",
        "linux",
        f"docker://{hub.host}/qnib/bench:latest",
        f"dir:{target}",
    )
    assert result.returncode == 0, result.stderr
    manifest = (target / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digests[TABLE[login]]
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        f"{login}:{login}",
        f"docker://{hub.host}/qnib/bench:latest",
    )
    index = json.loads(raw.stdout)
    amd64 = [m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "amd64"]
    assert amd64 == [digests[TABLE[login]]]
