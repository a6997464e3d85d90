"""x86-64 levels end to end: containerd, podman and docker run the level build a machine type's
CPU can use, through a real `metahub serve` in front of a real docker-registry.

`hpc/levels:latest` holds three runnable builds, as images ship them today: `linux/amd64/v2`,
`linux/amd64/v3` and `linux/amd64` (the baseline), without features, in that order; each is a
static program compiled with that level's `-march` that prints which build it is. The order
makes every silent fallback fail somewhere: zen3's build is neither the first entry (what
podman would take of two matches) nor the baseline (what every runtime takes unfiltered);
nehalem's is not the baseline; core2's is not the first.

The first tests pin what the runtimes do on their own, straight from the registry, since the
platform MetaHub serves a level under rests on it (docs/selection.md): none of them takes an
entry whose variant its default platform does not name, so an index whose only amd64 entry is
`amd64/v3` is refused by all three.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import archspec.cpu
import pytest

from metahub.demo.images import FeatureImage, build_feature_images
from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher, upstream_digests
from tests.support.servers import Containerd, Dockerd, Podman, RegistryServer, skopeo

pytestmark = pytest.mark.e2e

REPOSITORY = "hpc/levels"
UPSTREAM_AUTH = ("upstream-user", "upstream-secret")


def _build(tag: str, march: str, variant: str) -> FeatureImage:
    return FeatureImage(tag, march, (), f">> {REPOSITORY} build for -march={march}", variant)


V2 = _build("v2", "x86-64-v2", "v2")
V3 = _build("v3", "x86-64-v3", "v3")
BASE = _build("baseline", "x86-64", "")
BUILDS = {build.tag: build for build in (V2, V3, BASE)}

# The machine type's login is its cpu; each gets the highest level archspec says it runs.
EXPECTED = {"zen3": V3, "nehalem": V2, "core2": BASE}


@dataclass(frozen=True)
class Setup:
    upstream: RegistryServer
    hub: MetaHubServer
    digests: dict[str, str]  # tag -> digest, as the upstream registry serves it


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    # Premise: this host runs every level build, so a wrong choice shows in what runs, not
    # as a crash; and archspec's lineage is what EXPECTED says.
    host = archspec.cpu.host()
    assert archspec.cpu.TARGETS["x86_64_v3"] <= host, f"this host ({host}) cannot run v3 builds"
    targets = archspec.cpu.TARGETS
    assert targets["x86_64_v3"] <= targets["zen3"]
    assert targets["x86_64_v2"] <= targets["nehalem"]
    assert not targets["x86_64_v3"] <= targets["nehalem"]
    assert not targets["x86_64_v2"] <= targets["core2"]
    work = tmp_path_factory.mktemp("e2e-levels")
    with RegistryServer(work / "upstream", htpasswd=dict([UPSTREAM_AUTH])) as upstream:
        layout = work / "layout"
        build_feature_images(layout, REPOSITORY, [V3], index_tag="v3-only")
        build_feature_images(layout, REPOSITORY, BUILDS.values())
        pusher = Pusher(upstream.url, UPSTREAM_AUTH)
        pusher.layout(layout, REPOSITORY)
        pusher.close()
        digests = upstream_digests(
            upstream.url, REPOSITORY, [*BUILDS, "latest", "v3-only"], UPSTREAM_AUTH
        )
        (work / "hub").mkdir()
        config = {
            "upstream": {
                "url": upstream.url,
                "username": UPSTREAM_AUTH[0],
                "password": UPSTREAM_AUTH[1],
            },
            "machine_types": [
                {"name": cpu, "login": cpu, "password": cpu, "features": [f"cpu:{cpu}"]}
                for cpu in EXPECTED
            ],
        }
        with MetaHubServer(work / "hub", config) as hub:
            yield Setup(upstream, hub, digests)


def through_hub(setup: Setup) -> str:
    return f"{setup.hub.host}/{REPOSITORY}:latest"


def upstream_ref(setup: Setup, tag: str) -> str:
    return f"{setup.upstream.url.removeprefix('http://')}/{REPOSITORY}:{tag}"


UPSTREAM_CREDS = ":".join(UPSTREAM_AUTH)


# --- what the runtimes do on their own ----------------------------------------------------------


def test_containerd_alone_takes_no_unexpected_variant(setup: Setup, containerd: Containerd) -> None:
    refused = containerd.pull(upstream_ref(setup, "v3-only"), *UPSTREAM_AUTH)
    assert refused.returncode != 0
    assert "no match for platform" in refused.stderr
    ref = upstream_ref(setup, "latest")
    containerd.pull(ref, *UPSTREAM_AUTH, check=True)
    assert containerd.run(ref).stdout.strip() == BASE.message


def test_podman_alone_takes_no_unexpected_variant(setup: Setup, podman: Podman) -> None:
    refused = podman.pull(upstream_ref(setup, "v3-only"), UPSTREAM_CREDS)
    assert refused.returncode != 0
    assert 'variant ""' in refused.stderr
    ref = upstream_ref(setup, "latest")
    podman.pull(ref, UPSTREAM_CREDS, check=True)
    assert podman.run(ref).stdout.strip() == BASE.message  # not the first entry, v2


def test_docker_alone_takes_no_unexpected_variant(
    setup: Setup, dockerd: Dockerd, docker_config: Path
) -> None:
    host = setup.upstream.url.removeprefix("http://")
    login = dockerd.login(host, *UPSTREAM_AUTH, docker_config)
    assert login.returncode == 0, login.stderr
    refused = dockerd.run(upstream_ref(setup, "v3-only"), docker_config)
    assert refused.returncode != 0
    assert "no matching manifest for linux/amd64" in refused.stderr
    ran = dockerd.run(upstream_ref(setup, "latest"), docker_config)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == BASE.message


# --- through MetaHub ----------------------------------------------------------------------------


@pytest.mark.parametrize("cpu", sorted(EXPECTED))
def test_the_served_index_lists_the_level_under_the_baseline_platform(
    setup: Setup, cpu: str
) -> None:
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", "--creds", f"{cpu}:{cpu}",
        f"docker://{through_hub(setup)}",
    )  # fmt: skip
    assert raw.returncode == 0, raw.stderr
    manifests = json.loads(raw.stdout)["manifests"]
    assert [m["digest"] for m in manifests] == [setup.digests[EXPECTED[cpu].tag]]
    assert manifests[0]["platform"] == {"architecture": "amd64", "os": "linux"}


@pytest.mark.parametrize("cpu", sorted(EXPECTED))
def test_containerd_runs_the_level_build(setup: Setup, containerd: Containerd, cpu: str) -> None:
    ref = through_hub(setup)
    pulled = containerd.pull(ref, cpu, cpu)
    assert pulled.returncode == 0, pulled.stderr
    result = containerd.run(ref)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == EXPECTED[cpu].message


@pytest.mark.parametrize("cpu", sorted(EXPECTED))
def test_podman_runs_the_level_build(setup: Setup, podman: Podman, cpu: str) -> None:
    ref = through_hub(setup)
    pulled = podman.pull(ref, f"{cpu}:{cpu}")
    assert pulled.returncode == 0, pulled.stderr
    result = podman.run(ref)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == EXPECTED[cpu].message


@pytest.mark.parametrize("cpu", sorted(EXPECTED))
def test_docker_runs_the_level_build(
    setup: Setup, dockerd: Dockerd, docker_config: Path, cpu: str
) -> None:
    login = dockerd.login(setup.hub.host, cpu, cpu, docker_config)
    assert login.returncode == 0, login.stderr
    result = dockerd.run(through_hub(setup), docker_config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == EXPECTED[cpu].message
