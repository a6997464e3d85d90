"""Multi-build images for the fleet tests (coverage, warming): an index of builds, each with
its own config and layer, all sharing one base layer, pushed to a real registry.

Layers are real tar archives, so any client (skopeo included) takes them as layers. Digests are
hashed here from the bytes built here, never read back from MetaHub.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.support.oci import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, sha256
from tests.support.push import Pusher

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def tar_layer(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mtime = 0
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}


@dataclass(frozen=True)
class Build:
    platform: dict[str, str]
    features: tuple[str, ...]
    manifest: bytes
    blobs: tuple[bytes, ...]  # config, the shared base layer, its own layer

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def platform_text(self) -> str:
        p = self.platform
        return "/".join(part for part in (p["os"], p["architecture"], p.get("variant")) if part)


@dataclass(frozen=True)
class BuildIndex:
    index: bytes
    builds: list[Build] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return sha256(self.index)

    def build(self, *features: str, architecture: str = "amd64") -> Build:
        for build in self.builds:
            if build.features == features and build.platform["architecture"] == architecture:
                return build
        raise KeyError(features)


def build_index(
    seed: str, specs: list[tuple[dict[str, str], tuple[str, ...]]], *, layer_size: int = 4096
) -> BuildIndex:
    """One build per (platform, features); every build also holds the same base layer."""
    base = tar_layer("base.txt", f"base of {seed}\n".encode() * (layer_size // 16 + 1))
    builds = []
    for platform, features in specs:
        label = f"{seed} {'/'.join(platform.values())} {','.join(features) or 'generic'}"
        config = orjson.dumps(
            {"architecture": platform["architecture"], "os": platform["os"], "label": label}
        )
        own = tar_layer("build.txt", f"{label}\n".encode() * (layer_size // len(label) + 1))
        manifest = orjson.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _descriptor(OCI_CONFIG, config),
                "layers": [_descriptor(OCI_LAYER, base), _descriptor(OCI_LAYER, own)],
            }
        )
        builds.append(Build(platform, features, manifest, (config, base, own)))
    entries = []
    for build in builds:
        platform: dict[str, Any] = dict(build.platform)
        if build.features:
            platform["features"] = list(build.features)
        entries.append({**_descriptor(OCI_MANIFEST, build.manifest), "platform": platform})
    index = orjson.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return BuildIndex(index, builds)


def push(pusher: Pusher, name: str, tag: str, image: BuildIndex) -> str:
    """Push `image` as `name:tag` to a real registry; returns the index digest."""
    for build in image.builds:
        for blob in build.blobs:
            pusher.blob(name, blob)
        pusher.manifest(name, build.digest, build.manifest, OCI_MANIFEST)
    return pusher.manifest(name, tag, image.index, OCI_INDEX)


def push_single(pusher: Pusher, name: str, tag: str, build: Build) -> str:
    """Push one build as `name:tag`, a plain image manifest with no index."""
    for blob in build.blobs:
        pusher.blob(name, blob)
    return pusher.manifest(name, tag, build.manifest, OCI_MANIFEST)
