"""Warming end to end: `metahub warm` against a real `metahub serve`, then the upstream (a real
docker-registry) is stopped and skopeo copies the whole image for every warmed machine type.

The tag TTL is 0, so every pull asks the upstream again: with it gone, the tag is answered from
the manifest cache (stale-if-error), the filtered index from the filtered-digest store, the
builds' manifests from the manifest cache and their blobs from the blob cache. A machine type
that was not warmed gets a build whose blobs were never fetched: its copy fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import fleet_images
from tests.support.fleet_images import BuildIndex
from tests.support.metahub_server import MetaHubServer
from tests.support.oci import sha256
from tests.support.push import Pusher
from tests.support.servers import RegistryServer, skopeo
from tests.test_fleet_warm import ADMIN_TOKEN, IMAGE, MACHINE_TYPES, warm_image, warmed_blobs

pytestmark = pytest.mark.e2e

PASSWORDS = {m["login"]: m["password"] for m in MACHINE_TYPES}


@pytest.fixture(scope="module")
def image() -> BuildIndex:
    return warm_image()


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, image: BuildIndex
) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("e2e-warm-registry")) as registry:
        pusher = Pusher(registry.url)
        fleet_images.push(pusher, "fleet/warm", "1", image)
        pusher.close()
        yield registry


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: RegistryServer
) -> Iterator[MetaHubServer]:
    workdir = tmp_path_factory.mktemp("e2e-warm-hub")
    config = {
        "upstream": {"url": upstream.url, "retries": 0, "connect_timeout": 2},
        "machine_types": MACHINE_TYPES,
        "admin": {"tokens": [ADMIN_TOKEN]},
        "cache": {"tag_ttl": 0, "blobs": {"path": str(workdir / "blobs")}},
    }
    with MetaHubServer(workdir, config) as running:
        yield running


def copy(server: MetaHubServer, login: str, target: Path) -> subprocess.CompletedProcess[str]:
    return skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--src-creds",
        f"{login}:{PASSWORDS[login]}",
        f"docker://{server.host}/{IMAGE}",
        f"dir:{target}",
    )


def test_warmed_machine_types_pull_the_whole_image_with_the_upstream_gone(
    server: MetaHubServer, upstream: RegistryServer, image: BuildIndex, tmp_path: Path
) -> None:
    command = [
        sys.executable, "-m", "metahub", "warm", "--server", server.url, "--token", ADMIN_TOKEN,
        "--machine-type", "bw", "--machine-type", "zen", IMAGE,
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = warmed_blobs(image)
    for digest in expected:
        short = digest.split(":")[1][:12]
        assert f"sha256:{short}" in done.stdout and "fetched" in done.stdout
    assert f"{IMAGE} for bw: matched, 3 manifests" in done.stdout
    assert "summary: 7 fetched" in done.stdout
    assert "0 already cached, 0 failed" in done.stdout

    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "summary: 0 fetched (0 B), 7 already cached, 0 failed" in again.stdout

    upstream.stop()
    try:
        for login, feature in (("bw", "cpu:broadwell"), ("zen", "cpu:zen2")):
            target = tmp_path / login
            copied = copy(server, login, target)
            assert copied.returncode == 0, copied.stderr
            builds = [image.build(feature), image.build(architecture="arm64")]
            index = json.loads((target / "manifest.json").read_bytes())
            assert [e["digest"] for e in index["manifests"]] == [b.digest for b in builds]
            for build in builds:
                hex_digest = build.digest.split(":")[1]
                assert (target / f"{hex_digest}.manifest.json").read_bytes() == build.manifest
                for blob in build.blobs:
                    assert (target / sha256(blob).split(":")[1]).read_bytes() == blob
        # Not warmed: its generic build's blobs were never fetched, and the upstream is gone.
        failed = copy(server, "iv", tmp_path / "iv")
        assert failed.returncode != 0
        assert "503" in failed.stderr or "UPSTREAM_UNAVAILABLE" in failed.stderr, failed.stderr
    finally:
        upstream.start()


def test_warm_command_says_what_is_wrong(server: MetaHubServer) -> None:
    base = [sys.executable, "-m", "metahub", "warm", "--server", server.url]
    wrong_token = subprocess.run(
        [*base, "--token", "wrong", IMAGE], capture_output=True, text=True, timeout=120
    )
    assert wrong_token.returncode == 1
    assert "admin token is required" in wrong_token.stderr
    unknown = subprocess.run(
        [*base, "--token", ADMIN_TOKEN, "--machine-type", "nope", IMAGE],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode == 1
    assert "machine type 'nope' does not exist" in unknown.stderr
    assert "Traceback" not in unknown.stderr + wrong_token.stderr
