"""Virtual images: the seed's `qnib/bench`, made in the config of `qnib/plain-featuretest:
cpu-skylake` and `:cpu-broadwell`, served by a real `metahub serve` without existing upstream.

The upstream is a real docker-registry (and, for the demo's shape, an OCI layout) holding only
the per-target images. Expected bytes and digests are read from the upstream directly and
hashed here; docker and containerd pull the virtual image and run what they get.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from metahub.demo.images import FeatureImage, build_feature_images
from tests.support.metahub_server import MetaHubServer
from tests.support.oci import OCI_INDEX, OCI_MANIFEST, sha256
from tests.support.push import Pusher
from tests.support.servers import Containerd, Dockerd, RegistryServer, skopeo

pytestmark = pytest.mark.e2e

ACCEPT = f"{OCI_INDEX}, {OCI_MANIFEST}"
MEMBERS = "qnib/plain-featuretest"
UPSTREAM_AUTH = ("upstream-user", "upstream-secret")
BUILDS = {
    build.tag: build
    for build in (
        FeatureImage("cpu-skylake", "skylake", ("cpu:skylake",), ">> optimized for: cpu:skylake"),
        FeatureImage(
            "cpu-broadwell", "broadwell", ("cpu:broadwell",), ">> optimized for: cpu:broadwell"
        ),
    )
}
# login -> (features, the member it must get)
MACHINES = {
    "qnib-type1": (["cpu:broadwell"], "cpu-broadwell"),
    "qnib-type2": (["cpu:skylake"], "cpu-skylake"),
}
# The seed's manifest.yml, as a config entry.
BENCH = {
    "image": "qnib/bench",
    "tags": ["v1"],
    "manifests": [
        {
            "image": f"{MEMBERS}:cpu-skylake",
            "platform": {"architecture": "amd64", "os": "linux", "features": ["cpu:skylake"]},
        },
        {
            "image": f"{MEMBERS}:cpu-broadwell",
            "platform": {"architecture": "amd64", "os": "linux", "features": ["cpu:broadwell"]},
        },
    ],
}
BROKEN = {
    "image": "qnib/broken",
    "manifests": [
        {"image": f"{MEMBERS}:cpu-skylake", "platform": {"features": ["cpu:skylake"]}},
        {"image": f"{MEMBERS}:cpu-missing", "platform": {"features": ["cpu:broadwell"]}},
    ],
}


@dataclass(frozen=True)
class Member:
    data: bytes
    blobs: dict[str, bytes]  # digest -> bytes, config and layers

    @property
    def digest(self) -> str:
        return sha256(self.data)


@dataclass(frozen=True)
class Setup:
    hub: MetaHubServer
    upstream: RegistryServer
    members: dict[str, Member]  # tag -> as the upstream holds it


def hub_config(
    upstream: dict[str, Any], images: list[dict[str, Any]], *, anonymous: bool = False
) -> dict[str, Any]:
    config = {
        "upstream": upstream,
        "machine_types": [
            {"name": login, "login": login, "password": login, "features": features}
            for login, (features, _) in MACHINES.items()
        ],
        "images": images,
    }
    if anonymous:  # served the virtual index unfiltered
        config["anonymous"] = {"unfiltered": True}
    return config


def read_members(url: str, auth: tuple[str, str] | None) -> dict[str, Member]:
    members = {}
    with httpx.Client(base_url=url, auth=auth) as http:
        for tag in BUILDS:
            got = http.get(f"/v2/{MEMBERS}/manifests/{tag}", headers={"accept": OCI_MANIFEST})
            got.raise_for_status()
            document = json.loads(got.content)
            blobs = {}
            for descriptor in (document["config"], *document["layers"]):
                blob = http.get(f"/v2/{MEMBERS}/blobs/{descriptor['digest']}")
                blob.raise_for_status()
                assert sha256(blob.content) == descriptor["digest"]
                blobs[descriptor["digest"]] = blob.content
            members[tag] = Member(got.content, blobs)
    return members


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("virtual")
    with RegistryServer(work / "upstream", htpasswd=dict([UPSTREAM_AUTH])) as upstream:
        build_feature_images(work / "layout", MEMBERS, BUILDS.values())
        pusher = Pusher(upstream.url, UPSTREAM_AUTH)
        pusher.layout(work / "layout", MEMBERS)
        pusher.close()
        members = read_members(upstream.url, UPSTREAM_AUTH)
        (work / "hub").mkdir()
        registry = {"url": upstream.url, "username": UPSTREAM_AUTH[0], "password": UPSTREAM_AUTH[1]}
        with MetaHubServer(work / "hub", hub_config(registry, [BENCH, BROKEN])) as hub:
            yield Setup(hub, upstream, members)


def expected_index(members: dict[str, Member]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": members[tag].digest,
                "size": len(members[tag].data),
                "platform": {"architecture": "amd64", "os": "linux", "features": [feature]},
            }
            for tag, feature in (("cpu-skylake", "cpu:skylake"), ("cpu-broadwell", "cpu:broadwell"))
        ],
    }


def test_the_virtual_index_is_built_from_the_members(setup: Setup, tmp_path: Path) -> None:
    full = json.dumps(expected_index(setup.members), separators=(",", ":")).encode()
    digest = sha256(full)
    with httpx.Client(base_url=setup.hub.url, auth=("qnib-type1", "qnib-type1")) as http:
        # Asked by its digest, the whole index, unfiltered: the bytes of that digest.
        by_digest = http.get(f"/v2/qnib/bench/manifests/{digest}", headers={"accept": ACCEPT})
        latest = http.get("/v2/qnib/bench/manifests/latest", headers={"accept": ACCEPT})
        v1 = http.get("/v2/qnib/bench/manifests/v1", headers={"accept": ACCEPT})
        head = http.head("/v2/qnib/bench/manifests/latest", headers={"accept": ACCEPT})
        tags = http.get("/v2/qnib/bench/tags/list").json()
    assert by_digest.status_code == 200, by_digest.text
    assert by_digest.content == full
    assert by_digest.headers["docker-content-digest"] == digest
    assert by_digest.headers["content-type"] == OCI_INDEX
    # By tag, type1's filtered answer: the broadwell entry of that index, retrievable too.
    assert latest.status_code == 200, latest.text
    filtered = json.loads(latest.content)
    assert filtered["manifests"] == [expected_index(setup.members)["manifests"][1]]
    assert latest.headers["docker-content-digest"] == sha256(latest.content)
    assert v1.content == latest.content
    assert head.headers["docker-content-digest"] == sha256(latest.content)
    assert tags == {"name": "qnib/bench", "tags": ["latest", "v1"]}
    # The same bytes `metahub push` makes of the same spec: one digest either way.
    spec = {**BENCH, "image": f"{setup.upstream.host}/qnib/bench"}
    spec["manifests"] = [
        {**member, "image": f"{setup.upstream.host}/{member['image']}"}
        for member in BENCH["manifests"]
    ]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text("{}")
    dry = subprocess.run(
        [sys.executable, "-m", "metahub", "push", "--dry-run", "--creds",
         ":".join(UPSTREAM_AUTH), str(path)],
        capture_output=True, env={"DOCKER_CONFIG": str(tmp_path / "docker"), "PATH": "/usr/bin"},
        timeout=60, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.removesuffix(b"\n") == full


def test_manifests_and_blobs_under_the_virtual_name_come_from_the_members(setup: Setup) -> None:
    with httpx.Client(base_url=setup.hub.url, auth=("qnib-type2", "qnib-type2")) as http:
        http.get("/v2/qnib/bench/manifests/latest", headers={"accept": ACCEPT}).raise_for_status()
        for member in setup.members.values():
            got = http.get(f"/v2/qnib/bench/manifests/{member.digest}", headers={"accept": ACCEPT})
            assert got.status_code == 200 and got.content == member.data
            for digest, data in member.blobs.items():
                blob = http.get(f"/v2/qnib/bench/blobs/{digest}")
                assert blob.status_code == 200 and blob.content == data
                head = http.head(f"/v2/qnib/bench/blobs/{digest}")
                assert head.status_code == 200
                assert head.headers["content-length"] == str(len(data))
        unknown = "sha256:" + "0" * 64
        missing = http.get(f"/v2/qnib/bench/blobs/{unknown}")
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert "virtual image qnib/bench" in missing.json()["errors"][0]["message"]


@pytest.mark.parametrize("login", sorted(MACHINES))
def test_each_machine_type_gets_its_member(setup: Setup, tmp_path: Path, login: str) -> None:
    features, tag = MACHINES[login]
    creds = f"{login}:{login}"
    ref = f"docker://{setup.hub.host}/qnib/bench:latest"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds, ref)
    assert raw.returncode == 0, raw.stderr
    index = json.loads(raw.stdout)
    assert [m["digest"] for m in index["manifests"]] == [setup.members[tag].digest]
    assert index["manifests"][0]["platform"]["features"] == features
    target = tmp_path / "copy"
    copied = skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, ref, f"dir:{target}")
    assert copied.returncode == 0, copied.stderr
    assert sha256((target / "manifest.json").read_bytes()) == setup.members[tag].digest


def test_a_missing_member_is_a_clear_404(setup: Setup) -> None:
    with httpx.Client(base_url=setup.hub.url, auth=("qnib-type1", "qnib-type1")) as http:
        got = http.get("/v2/qnib/broken/manifests/latest", headers={"accept": ACCEPT})
    assert got.status_code == 404
    error = got.json()["errors"][0]
    assert error["code"] == "MANIFEST_UNKNOWN"
    assert "virtual image qnib/broken:latest" in error["message"]
    assert f"{MEMBERS}:cpu-missing" in error["message"]
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", "--creds", "qnib-type1:qnib-type1",
        f"docker://{setup.hub.host}/qnib/broken:latest",
    )  # fmt: skip
    assert raw.returncode != 0
    assert f"{MEMBERS}:cpu-missing" in raw.stderr


@pytest.mark.parametrize("login", sorted(MACHINES))
def test_docker_runs_the_member_for_its_machine_type(
    setup: Setup, dockerd: Dockerd, tmp_path: Path, login: str
) -> None:
    dockerd.login(setup.hub.host, login, login, tmp_path).check_returncode()
    result = dockerd.run(f"{setup.hub.host}/qnib/bench", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == BUILDS[MACHINES[login][1]].message


@pytest.mark.parametrize("login", sorted(MACHINES))
def test_containerd_runs_the_member_for_its_machine_type(
    setup: Setup, containerd: Containerd, login: str
) -> None:
    ref = f"{setup.hub.host}/qnib/bench:v1"
    pulled = containerd.pull(ref, login, login)
    assert pulled.returncode == 0, pulled.stderr
    result = containerd.run(ref)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == BUILDS[MACHINES[login][1]].message


# -- an OCI layout upstream, as the demo has ---------------------------------------------------


@pytest.fixture(scope="module")
def layout_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MetaHubServer, Path]]:
    work = tmp_path_factory.mktemp("virtual-layout")
    build_feature_images(work / "layout", MEMBERS, BUILDS.values())
    # A virtual tag beside the upstream's own tags of the same repository, and a new name.
    combined = {**BENCH, "image": f"{MEMBERS}:combined", "tags": []}
    (work / "hub").mkdir()
    config = hub_config({"path": str(work / "layout")}, [BENCH, combined], anonymous=True)
    with MetaHubServer(work / "hub", config) as hub:
        yield hub, work / "layout"


def test_an_oci_layout_upstream_serves_virtual_images_too(
    layout_hub: tuple[MetaHubServer, Path], tmp_path: Path
) -> None:
    hub, layout = layout_hub
    with httpx.Client(base_url=hub.url) as http:
        bench = http.get("/v2/qnib/bench/manifests/latest", headers={"accept": ACCEPT})
        combined = http.get(f"/v2/{MEMBERS}/manifests/combined", headers={"accept": ACCEPT})
        tags = http.get(f"/v2/{MEMBERS}/tags/list").json()["tags"]
        passthrough = http.get(f"/v2/{MEMBERS}/manifests/cpu-skylake", headers={"accept": ACCEPT})
    assert bench.status_code == 200, bench.text
    assert combined.content == bench.content
    assert tags == ["combined", "cpu-broadwell", "cpu-skylake", "latest"]
    members = {
        tag: Member((layout / "blobs" / "sha256" / d.removeprefix("sha256:")).read_bytes(), {})
        for tag, d in _layout_digests(layout).items()
    }
    assert json.loads(bench.content) == expected_index(members)
    assert sha256(passthrough.content) == members["cpu-skylake"].digest
    # A login gets its member (Basic credentials sent up front, so not served anonymously).
    with httpx.Client(base_url=hub.url, auth=("qnib-type1", "qnib-type1")) as http:
        filtered = http.get("/v2/qnib/bench/manifests/v1", headers={"accept": ACCEPT})
    assert [m["digest"] for m in json.loads(filtered.content)["manifests"]] == [
        members["cpu-broadwell"].digest
    ]
    # Anonymous clients are served the whole index; skopeo takes its first amd64 entry and
    # pulls its config and layer under the virtual name.
    target = tmp_path / "copy"
    copied = skopeo(
        "copy", "--src-tls-verify=false", "--override-arch", "amd64", "--override-os", "linux",
        f"docker://{hub.host}/qnib/bench:v1", f"dir:{target}",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert sha256((target / "manifest.json").read_bytes()) == members["cpu-skylake"].digest
    for descriptor in json.loads(members["cpu-skylake"].data)["layers"]:
        assert (
            sha256((target / descriptor["digest"].removeprefix("sha256:")).read_bytes())
            == (descriptor["digest"])
        )


def _layout_digests(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_text())
    found = {}
    for entry in index["manifests"]:
        name = entry["annotations"]["org.opencontainers.image.ref.name"]
        found[name.rpartition(":")[2]] = entry["digest"]
    return found


def test_explain_shows_the_choice_within_a_virtual_image(
    layout_hub: tuple[MetaHubServer, Path],
) -> None:
    hub, layout = layout_hub
    result = subprocess.run(
        [sys.executable, "-m", "metahub", "explain", "--config", str(hub.tmp / "metahub.yaml"),
         "--machine-type", "qnib-type2", "--json", "qnib/bench:latest"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    explanation = json.loads(result.stdout)
    digests = _layout_digests(layout)
    chosen = [e["digest"] for e in explanation["entries"] if e["chosen"]]
    assert chosen == [digests["cpu-skylake"]]
    assert [e["features"] for e in explanation["entries"]] == [["cpu:skylake"], ["cpu:broadwell"]]
