"""Put test content into a real upstream registry over its HTTP API (monolithic uploads), and
read back the digests it announces for it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.support.oci import ACCEPT_ALL, sha256

REF_NAME = "org.opencontainers.image.ref.name"


class Pusher:
    def __init__(self, registry_url: str, auth: tuple[str, str] | None = None) -> None:
        self.client = httpx.Client(base_url=registry_url, auth=auth, timeout=30)

    def blob(self, name: str, data: bytes) -> str:
        digest = sha256(data)
        if self.client.head(f"/v2/{name}/blobs/{digest}").status_code == 200:
            return digest
        started = self.client.post(f"/v2/{name}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        separator = "&" if "?" in location else "?"
        done = self.client.put(
            f"{location}{separator}digest={digest}",
            content=data,
            headers={"content-type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
        return digest

    def manifest(self, name: str, reference: str, data: bytes, media_type: str) -> str:
        response = self.client.put(
            f"/v2/{name}/manifests/{reference}", content=data, headers={"content-type": media_type}
        )
        assert response.status_code == 201, response.text
        return sha256(data)

    def layout(self, layout: Path, name: str, *, into: str | None = None) -> dict[str, str]:
        """Push every `name:tag` of an OCI layout with everything it references (to the
        repository `into`, when given, instead of `name`); tag -> digest."""
        index = json.loads((layout / "index.json").read_text())
        pushed: dict[str, str] = {}
        for descriptor in index["manifests"]:
            ref = descriptor.get("annotations", {}).get(REF_NAME, "")
            repo, _, tag = ref.rpartition(":")
            if repo != name:
                continue
            target = into or name
            self._tree(layout, target, descriptor["digest"], descriptor["mediaType"])
            data = _read_blob(layout, descriptor["digest"])
            pushed[tag] = self.manifest(target, tag, data, descriptor["mediaType"])
        return pushed

    def _tree(self, layout: Path, name: str, digest: str, media_type: str) -> None:
        document = json.loads(_read_blob(layout, digest))
        if "manifests" in document:
            for child in document["manifests"]:
                self._tree(layout, name, child["digest"], child["mediaType"])
                self.manifest(
                    name, child["digest"], _read_blob(layout, child["digest"]), child["mediaType"]
                )
            return
        for blob in [document["config"], *document["layers"]]:
            self.blob(name, _read_blob(layout, blob["digest"]))

    def close(self) -> None:
        self.client.close()


def _read_blob(layout: Path, digest: str) -> bytes:
    algorithm, hex_digest = digest.split(":", 1)
    return (layout / "blobs" / algorithm / hex_digest).read_bytes()


def upstream_digests(
    registry_url: str, name: str, tags: list[str], auth: tuple[str, str] | None = None
) -> dict[str, str]:
    """Each tag's digest as the registry itself announces it, checked against its bytes."""
    digests: dict[str, str] = {}
    with httpx.Client(base_url=registry_url, auth=auth) as http:
        for tag in tags:
            response = http.get(f"/v2/{name}/manifests/{tag}", headers={"accept": ACCEPT_ALL})
            response.raise_for_status()
            digest = response.headers["docker-content-digest"]
            assert digest == sha256(response.content)
            digests[tag] = digest
    return digests
