"""The benchmark's floor forwards what the upstream serves, and checks a blob as MetaHub does.

Its figures stand beside MetaHub's in `make bench` as the serving stack's own cost; a floor
that skipped the bytes' check or answered something else would make that comparison a lie.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import pytest
from benchmarks.floor import BareProxy

from tests.support.oci import OCI_CONFIG, OCI_MANIFEST, sha256
from tests.support.push import Pusher
from tests.support.scripted_registry import Blob, ScriptedRegistry
from tests.support.servers import RegistryServer

LAYER = "application/vnd.oci.image.layer.v1.tar"


def get(host: str, path: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection(host, timeout=30)
    try:
        connection.request("GET", path, headers={"Accept": OCI_MANIFEST})
        response = connection.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        connection.close()


def test_manifest_and_blob_arrive_as_the_upstream_serves_them(
    registry: RegistryServer, tmp_path: Path
) -> None:
    pusher = Pusher(registry.url)
    config, layer = b"{}", os.urandom(3 * 1024 * 1024 + 17)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": pusher.blob("floor", config), "size": 2},
            "layers": [
                {"mediaType": LAYER, "digest": pusher.blob("floor", layer), "size": len(layer)}
            ],
        }
    ).encode()
    pusher.manifest("floor", "v1", manifest, OCI_MANIFEST)
    pusher.client.close()
    with BareProxy(tmp_path, registry.url) as floor:
        for path, expected in [
            ("/v2/floor/manifests/v1", manifest),
            (f"/v2/floor/blobs/{sha256(layer)}", layer),
        ]:
            status, media_type, body = get(floor.host, path)
            assert (status, body) == (200, expected)
            assert media_type == get(registry.host, path)[1]
        status, _, _ = get(floor.host, "/v2/floor/manifests/absent")
        assert status == 404


def test_a_blob_that_does_not_match_its_digest_is_cut_short(tmp_path: Path) -> None:
    blob = Blob(os.urandom(1024 * 1024), repeat=3)
    blob.corrupt_at = blob.size // 2
    with ScriptedRegistry() as upstream:
        upstream.add_blob(blob)
        with BareProxy(tmp_path, upstream.url) as floor:
            connection = http.client.HTTPConnection(floor.host, timeout=30)
            connection.request("GET", f"/v2/floor/blobs/{blob.digest}")
            response = connection.getresponse()
            assert response.status == 200
            with pytest.raises(http.client.IncompleteRead) as short:
                response.read()
            connection.close()
    assert len(short.value.partial) < blob.size
