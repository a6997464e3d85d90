"""`POST /api/v1/warm`: the manifests and blobs each machine type's pull would get, fetched into
the caches, with progress streamed as NDJSON; against a real docker-registry upstream.

The image (built and hashed here) has four builds sharing a base layer: amd64 `cpu:broadwell`,
amd64 `cpu:zen2`, amd64 generic, arm64 generic. Warming for `bw` (broadwell) and `zen` (zen2)
needs the broadwell, zen2 and arm64 builds: 3 configs, 3 own layers and the base layer, 7 blobs,
each fetched once though both types share the arm64 build and every build the base layer.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from metahub.config import parse_config
from metahub.hub import Hub
from metahub.serving.warm import Warmer, WarmImage
from tests.support import fleet_images
from tests.support.fleet_images import BuildIndex
from tests.support.inprocess import InProcessHub
from tests.support.push import Pusher
from tests.support.registry_log import metahub_requests
from tests.support.servers import RegistryServer

ADMIN_TOKEN = "fleet-warm-admin-token"
IMAGE = "fleet/warm:1"
AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64"}
MACHINE_TYPES = [
    {"name": "bw", "login": "bw", "password": "bw-pw", "features": ["cpu:broadwell"]},
    {"name": "zen", "login": "zen", "password": "zen-pw", "features": ["cpu:zen2"]},
    {"name": "iv", "login": "iv", "password": "iv-pw", "features": ["cpu:ivybridge"]},
]


def warm_image() -> BuildIndex:
    return fleet_images.build_index(
        "warm",
        [(AMD64, ("cpu:broadwell",)), (AMD64, ("cpu:zen2",)), (AMD64, ()), (ARM64, ())],
        layer_size=64 * 1024,
    )


def warmed_blobs(image: BuildIndex) -> dict[str, int]:
    """digest -> size of every blob the bw and zen pulls need, hashed here."""
    builds = [
        image.build("cpu:broadwell"),
        image.build("cpu:zen2"),
        image.build(architecture="arm64"),
    ]
    return {fleet_images.sha256(blob): len(blob) for build in builds for blob in build.blobs}


def hub_config(upstream_url: str, data: Path, *, blob_cache: bool = True) -> dict[str, Any]:
    config: dict[str, Any] = {
        "upstream": {"url": upstream_url},
        "data_dir": str(data),
        "machine_types": MACHINE_TYPES,
        "admin": {"tokens": [ADMIN_TOKEN]},
    }
    if blob_cache:
        config["cache"] = {"blobs": {"path": str(data / "blobs")}}
    return config


@pytest.fixture(scope="module")
def image() -> BuildIndex:
    return warm_image()


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, image: BuildIndex
) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("warm-registry")) as registry:
        pusher = Pusher(registry.url)
        fleet_images.push(pusher, "fleet/warm", "1", image)
        pusher.close()
        yield registry


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, upstream: RegistryServer
) -> Iterator[InProcessHub]:
    workdir = tmp_path_factory.mktemp("warm-hub")
    with InProcessHub(workdir, hub_config(upstream.url, workdir / "data")) as running:
        yield running


def warm(client: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
    response = client.post(
        "/api/v1/warm", json=body, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    if response.status_code != 200:
        return response, []
    assert response.headers["content-type"] == "application/x-ndjson"
    return response, [orjson.loads(line) for line in response.content.splitlines()]


def test_warm_fetches_each_blob_once_and_reports_as_it_goes(
    hub: InProcessHub, upstream: RegistryServer, image: BuildIndex
) -> None:
    expected = warmed_blobs(image)
    assert len(expected) == 7  # the premise: shared blobs counted once
    with hub.client() as client:
        response, events = warm(client, {"images": [IMAGE], "machine_types": ["bw", "zen"]})
    assert response.status_code == 200, response.text

    manifests = [e for e in events if e["event"] == "manifests"]
    assert [(e["machine_type"], e["outcome"], e["count"]) for e in manifests] == [
        ("bw", "matched", 3),  # the filtered index and its two builds
        ("zen", "matched", 3),
    ]
    done = {e["digest"]: e for e in events if e["event"] == "blob_done"}
    assert {d: e["size"] for d, e in done.items()} == expected
    assert {e["result"] for e in done.values()} == {"fetched"}
    for digest, size in expected.items():
        progress = [
            e["bytes"] for e in events if e["event"] == "progress" and e["digest"] == digest
        ]
        assert progress and progress[-1] == size and progress == sorted(progress)
    assert events[-1] == {
        "event": "summary",
        "manifests": 6,
        "manifest_failures": 0,
        "fetched": 7,
        "cached": 0,
        "failed": 0,
        "bytes_fetched": sum(expected.values()),
    }
    gets = Counter(
        r.uri.rsplit("/", 1)[1] for r in metahub_requests(upstream, "GET") if "/blobs/" in r.uri
    )
    assert gets == Counter(list(expected))  # every blob asked of the upstream exactly once


def test_warming_again_finds_everything_cached(hub: InProcessHub, image: BuildIndex) -> None:
    with hub.client() as client:
        response, events = warm(client, {"images": [IMAGE], "machine_types": ["bw", "zen"]})
    assert response.status_code == 200
    summary = events[-1]
    assert (summary["fetched"], summary["cached"], summary["failed"]) == (0, 7, 0)
    assert not [e for e in events if e["event"] in ("blob", "progress")]


def test_warm_reports_a_machine_type_that_gets_nothing(
    hub: InProcessHub, upstream: RegistryServer
) -> None:
    only = fleet_images.build_index("warm-only", [(AMD64, ("cpu:zen2",))])
    pusher = Pusher(upstream.url)
    fleet_images.push(pusher, "fleet/zen-only", "1", only)
    pusher.close()
    with hub.client() as client:
        response, events = warm(client, {"images": ["fleet/zen-only:1"]})  # every machine type
    assert response.status_code == 200
    manifests = {e["machine_type"]: e for e in events if e["event"] == "manifests"}
    assert manifests["zen"]["outcome"] == "matched"
    for name in ("bw", "iv"):
        assert manifests[name]["outcome"] == "none"
        assert "no entry of this index fits" in manifests[name]["error"]
    assert events[-1]["manifest_failures"] == 2
    assert events[-1]["fetched"] + events[-1]["cached"] == 3


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "INVALID_REQUEST"),
        ({"images": []}, 422, "INVALID_REQUEST"),
        ({"images": ["Not A Name"]}, 400, "NAME_INVALID"),
        ({"images": [IMAGE], "machine_types": ["nope"]}, 404, "NOT_FOUND"),
        ({"images": [IMAGE], "extra": 1}, 422, "INVALID_REQUEST"),
    ],
)
def test_warm_refuses_bad_input(
    hub: InProcessHub, body: dict[str, Any], status: int, code: str
) -> None:
    with hub.client() as client:
        response, _ = warm(client, body)
    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["code"] == code


def test_warm_needs_an_admin_token(hub: InProcessHub) -> None:
    with hub.client() as client:
        response = client.post("/api/v1/warm", json={"images": [IMAGE]})
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_warm_without_a_blob_cache_is_a_clear_error(
    tmp_path: Path, upstream: RegistryServer
) -> None:
    config = hub_config(upstream.url, tmp_path / "data", blob_cache=False)
    with InProcessHub(tmp_path, config) as bare, bare.client() as client:
        response, _ = warm(client, {"images": [IMAGE]})
    assert response.status_code == 409
    error = response.json()["errors"][0]
    assert error["code"] == "CONFLICT"
    assert "cache.blobs" in error["message"]


def test_warm_reports_an_image_the_upstream_lacks(hub: InProcessHub) -> None:
    with hub.client() as client:
        response, events = warm(client, {"images": ["fleet/missing:1"], "machine_types": ["bw"]})
    assert response.status_code == 200
    (manifests,) = [e for e in events if e["event"] == "manifests"]
    assert manifests["outcome"] is None
    assert "fleet/missing" in manifests["error"]
    assert events[-1]["manifest_failures"] == 1


async def test_a_blob_the_cache_cannot_keep_is_a_failure(
    tmp_path: Path, upstream: RegistryServer
) -> None:
    hub = await Hub.start(parse_config(hub_config(upstream.url, tmp_path / "data")))
    try:
        assert hub.blobs.cache is not None

        def disk_full(fd: int, data: memoryview) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        hub.blobs.cache.write = disk_full
        warmer = Warmer(hub.manifests, hub.blobs)
        events = [
            event
            async for event in warmer.warm(
                [WarmImage(IMAGE, "fleet/warm", "1")], [hub.profiles.named("bw")]
            )
        ]
    finally:
        await hub.close()
    done = [e for e in events if e["event"] == "blob_done"]
    assert len(done) == 5  # the broadwell and arm64 builds; the base layer once
    assert {e["result"] for e in done} == {"failed"}
    assert all("did not keep it" in e["error"] for e in done)
    assert events[-1]["failed"] == 5
