"""Small multi-architecture images with `platform.features`, for cache and observability tests.

Each index holds one linux/amd64 manifest per feature; a machine type with one of the features
gets an index with just that entry. Every call with a new `seed` makes new digests, so a test
can tell which version of a tag it was served.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from tests.support.oci import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, sha256
from tests.support.push import Pusher
from tests.support.scripted_registry import ScriptedRegistry

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
FEATURES = ("cpu:broadwell", "cpu:skylake")
# Machine types that pick one entry each: the most derived microarchitecture that fits wins.
MACHINE_TYPES = [
    {"name": "bw", "login": "bw", "password": "bw-pass", "features": ["cpu:broadwell"]},
    {"name": "sk", "login": "sk", "password": "sk-pass", "features": ["cpu:skylake"]},
]


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}


@dataclass(frozen=True)
class FeatureIndex:
    index: bytes
    manifests: dict[str, bytes]  # feature -> the manifest built for it
    blobs: list[bytes]

    @property
    def digest(self) -> str:
        return sha256(self.index)

    def manifest_digest(self, feature: str) -> str:
        return sha256(self.manifests[feature])


def feature_index(seed: str, features: tuple[str, ...] = FEATURES) -> FeatureIndex:
    manifests: dict[str, bytes] = {}
    blobs: list[bytes] = []
    entries = []
    for feature in features:
        config = orjson.dumps({"architecture": "amd64", "os": "linux", "seed": seed + feature})
        layer = f"layer for {seed} {feature}\n".encode()
        blobs += [config, layer]
        manifest = orjson.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _descriptor(OCI_CONFIG, config),
                "layers": [_descriptor(OCI_LAYER, layer)],
            }
        )
        manifests[feature] = manifest
        platform = {"architecture": "amd64", "os": "linux", "features": [feature]}
        entries.append({**_descriptor(OCI_MANIFEST, manifest), "platform": platform})
    index = orjson.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return FeatureIndex(index, manifests, blobs)


def push(pusher: Pusher, name: str, tag: str, image: FeatureIndex) -> str:
    """Push `image` to a real registry as `name:tag`; returns the index digest."""
    for blob in image.blobs:
        pusher.blob(name, blob)
    for manifest in image.manifests.values():
        pusher.manifest(name, sha256(manifest), manifest, OCI_MANIFEST)
    return pusher.manifest(name, tag, image.index, OCI_INDEX)


def serve(registry: ScriptedRegistry, name: str, tag: str, image: FeatureIndex) -> str:
    """Put `image` into a scripted registry as `name:tag`; returns the index digest."""
    for manifest in image.manifests.values():
        registry.add_manifest(name, None, manifest, OCI_MANIFEST)
    return registry.add_manifest(name, tag, image.index, OCI_INDEX)


def entries(index: bytes) -> list[str]:
    """The manifest digests an index lists."""
    return [entry["digest"] for entry in orjson.loads(index)["manifests"]]
