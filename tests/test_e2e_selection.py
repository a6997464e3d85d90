"""Compatibility-aware selection end to end: machine types that name no build still get one.

A real docker-registry holds `hpc/bench:latest`, six runnable amd64 builds (static programs
compiled with different `-march` flags), none of them built for the machine types that log in
through a real `metahub serve`. Each machine type must get the build its CPU lineage and CUDA
capability can use best; expected digests come from the upstream registry directly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import archspec.cpu
import pytest

from metahub.demo.images import FeatureImage, build_feature_images
from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher, upstream_digests
from tests.support.servers import Dockerd, RegistryServer, skopeo

pytestmark = pytest.mark.e2e

REPOSITORY = "hpc/bench"
UPSTREAM_AUTH = ("upstream-user", "upstream-secret")


def _build(tag: str, march: str, *features: str) -> FeatureImage:
    named = ",".join(features) or "none (generic x86-64)"
    return FeatureImage(tag, march, features, f">> {REPOSITORY} build for features: {named}")


# Index order is part of the test: the best fit is not simply the first or the last entry.
BUILDS = {
    build.tag: build
    for build in (
        _build("cpu-haswell", "haswell", "cpu:haswell"),
        _build("cpu-skylake_avx512", "skylake-avx512", "cpu:skylake_avx512"),
        _build("cpu-zen2", "znver2", "cpu:zen2"),
        _build("cpu-broadwell-nvcap-8.0", "broadwell", "cpu:broadwell", "nvcap:8.0"),
        _build("cpu-broadwell-nvcap-9.0", "broadwell", "cpu:broadwell", "nvcap:9.0"),
        _build("generic", "x86-64"),
    )
}


@dataclass(frozen=True)
class MachineType:
    login: str
    features: tuple[str, ...]
    expected: str  # the tag of the build it must get


# None of these CPUs or capabilities is built for; each must land on its nearest ancestor.
MACHINE_TYPES = {
    machine.login: machine
    for machine in (
        MachineType("sapphirerapids", ("cpu:sapphirerapids",), "cpu-skylake_avx512"),
        MachineType("zen3", ("cpu:zen3",), "cpu-zen2"),
        # Ivy Bridge lacks AVX2, so nothing above the generic build runs on it.
        MachineType("ivybridge", ("cpu:ivybridge",), "generic"),
        # 8.0 cubins run on 8.6; 9.0 ones never run on an 8.x card.
        MachineType(
            "cascadelake-nvcap86", ("cpu:cascadelake", "nvcap:8.6"), "cpu-broadwell-nvcap-8.0"
        ),
        # Both GPU builds outrank the skylake_avx512 one: they satisfy two features, not one.
        MachineType(
            "sapphirerapids-nvcap90",
            ("cpu:sapphirerapids", "nvcap:9.0"),
            "cpu-broadwell-nvcap-9.0",
        ),
    )
}


@dataclass(frozen=True)
class Setup:
    hub: MetaHubServer
    digests: dict[str, str]  # tag -> digest, as the upstream registry serves it


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("e2e-selection")
    with RegistryServer(work / "upstream", htpasswd=dict([UPSTREAM_AUTH])) as upstream:
        build_feature_images(work / "layout", REPOSITORY, BUILDS.values())
        pusher = Pusher(upstream.url, UPSTREAM_AUTH)
        pusher.layout(work / "layout", REPOSITORY)
        pusher.close()
        digests = upstream_digests(upstream.url, REPOSITORY, [*BUILDS, "latest"], UPSTREAM_AUTH)
        (work / "hub").mkdir()
        config = {
            "upstream": {
                "url": upstream.url,
                "username": UPSTREAM_AUTH[0],
                "password": UPSTREAM_AUTH[1],
            },
            "machine_types": [
                {
                    "name": machine.login,
                    "login": machine.login,
                    "password": machine.login,
                    "features": list(machine.features),
                }
                for machine in MACHINE_TYPES.values()
            ],
        }
        with MetaHubServer(work / "hub", config) as hub:
            yield Setup(hub, digests)


def creds(login: str) -> str:
    return f"{login}:{login}"


@pytest.mark.parametrize("login", sorted(MACHINE_TYPES))
def test_skopeo_inspect_shows_only_the_best_fitting_entry(setup: Setup, login: str) -> None:
    expected = BUILDS[MACHINE_TYPES[login].expected]
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        creds(login),
        f"docker://{setup.hub.host}/{REPOSITORY}:latest",
    )
    assert raw.returncode == 0, raw.stderr
    index = json.loads(raw.stdout)
    assert [m["digest"] for m in index["manifests"]] == [setup.digests[expected.tag]]
    assert index["manifests"][0]["platform"].get("features", []) == list(expected.features)


@pytest.mark.parametrize("login", sorted(MACHINE_TYPES))
def test_skopeo_copy_gets_the_best_fitting_image(setup: Setup, tmp_path: Path, login: str) -> None:
    target = tmp_path / "copy"
    result = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        creds(login),
        "--override-arch",
        "amd64",
        "--override-os",
        "linux",
        f"docker://{setup.hub.host}/{REPOSITORY}:latest",
        f"dir:{target}",
    )
    assert result.returncode == 0, result.stderr
    manifest = (target / "manifest.json").read_bytes()
    expected = MACHINE_TYPES[login].expected
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == setup.digests[expected]


def host_can_run(build: FeatureImage) -> bool:
    """Whether archspec says this host's CPU descends from the build's target, if it has one."""
    wanted = [f.removeprefix("cpu:") for f in build.features if f.startswith("cpu:")]
    host = archspec.cpu.host()
    return all(
        name in archspec.cpu.TARGETS and archspec.cpu.TARGETS[name] <= host for name in wanted
    )


def runnable_machine_type() -> MachineType:
    """The machine type whose build this host runs, preferring a tuned build to the generic one."""
    candidates = sorted(MACHINE_TYPES.values(), key=lambda m: not BUILDS[m.expected].features)
    return next(m for m in candidates if host_can_run(BUILDS[m.expected]))


def test_docker_runs_the_build_chosen_for_its_machine_type(
    setup: Setup, dockerd: Dockerd, docker_config: Path
) -> None:
    machine = runnable_machine_type()
    login = dockerd.login(setup.hub.host, machine.login, machine.login, docker_config)
    assert login.returncode == 0, login.stderr
    result = dockerd.run(f"{setup.hub.host}/{REPOSITORY}:latest", docker_config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == BUILDS[machine.expected].message
