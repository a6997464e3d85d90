"""`blobs.redirect: pass` end to end: a real registry on object-storage-like terms, a real client.

docker-registry's `redirect` storage middleware answers every blob GET with a redirect to its
storage, here a real nginx serving the registry's own storage directory (as S3 or a CDN would
serve the bucket). skopeo pulls an image through MetaHub, which passes each redirect on: the
blobs travel from nginx to skopeo, which checks every digest, and MetaHub sends none of their
bytes. The counts come from nginx's access log and MetaHub's own metrics.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from metahub.demo.images import build_demo_layout
from tests.support.metahub_server import MetaHubServer
from tests.support.nginx import NginxServer
from tests.support.push import Pusher
from tests.support.servers import RegistryServer, skopeo

pytestmark = pytest.mark.e2e

UPSTREAM_AUTH = ("upstream-user", "upstream-secret")
LOGIN = "qnib-type1"


class RedirectingRegistry(RegistryServer):
    """docker-registry whose blob GETs redirect to `storage_url` + the blob's storage path."""

    def __init__(self, tmp: Path, storage_url: str) -> None:
        super().__init__(tmp, htpasswd=dict([UPSTREAM_AUTH]))
        self.storage_url = storage_url

    def _write_config(self) -> None:
        super()._write_config()
        config = yaml.safe_load(self.config_path.read_text())
        config["middleware"] = {
            "storage": [{"name": "redirect", "options": {"baseurl": self.storage_url}}]
        }
        self.config_path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MetaHubServer, RedirectingRegistry, Path]]:
    work = tmp_path_factory.mktemp("e2e-pass")
    storage_log = work / "storage-access.log"
    # nginx serves the registry's storage directory, which exists once the registry runs.
    storage = NginxServer(work / "storage", "")
    upstream = RedirectingRegistry(work / "upstream", storage.url)
    storage.server_block = (
        f"root {upstream.storage}; access_log {storage_log} combined; "
        "default_type application/octet-stream;"
    )
    with upstream, storage:
        build_demo_layout(work / "layout")
        pusher = Pusher(upstream.url, UPSTREAM_AUTH)
        pusher.layout(work / "layout", "qnib/bench")
        pusher.close()
        (work / "hub").mkdir()
        config = {
            "upstream": {
                "url": upstream.url,
                "username": UPSTREAM_AUTH[0],
                "password": UPSTREAM_AUTH[1],
                "redirect_hosts": [storage.host],
            },
            "blobs": {"redirect": "pass"},
            "machine_types": [
                {"name": "type1", "login": LOGIN, "password": LOGIN, "features": ["cpu:broadwell"]}
            ],
        }
        with MetaHubServer(work / "hub", config) as hub:
            yield hub, upstream, storage_log


def blob_bytes_sent(hub: MetaHubServer) -> float:
    text = httpx.get(f"{hub.url}/metrics", timeout=30).text
    found = re.findall(r'^metahub_bytes_served_total\{route="blob"\} (\S+)$', text, re.MULTILINE)
    assert found, "MetaHub counts no blob route"
    return sum(float(value) for value in found)


def test_skopeo_pulls_the_blobs_from_the_storage_and_none_through_metahub(setup, tmp_path: Path):
    hub, _, storage_log = setup
    target = tmp_path / "image"

    copied = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        f"{LOGIN}:{LOGIN}",
        f"docker://{hub.host}/qnib/bench:latest",
        f"dir:{target}",
        timeout=300,
    )

    assert copied.returncode == 0, copied.stderr
    manifest = (target / "manifest.json").read_bytes()
    document = yaml.safe_load(manifest)  # JSON is YAML
    blobs = [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]
    for digest in blobs:
        data = (target / digest.removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest  # checked here too
    served = storage_log.read_text()
    for digest in blobs:  # each blob came from the storage, to skopeo itself
        hexdigest = digest.removeprefix("sha256:")
        lines = [line for line in served.splitlines() if f"/{hexdigest}/data " in line]
        assert lines, f"the storage never served {digest}"
        assert all('" 200 ' in line and "skopeo" in line.lower() for line in lines), lines
    assert blob_bytes_sent(hub) == 0
