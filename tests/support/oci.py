"""OCI builders for the tests: digests, descriptors, indexes and the platforms they name.

Media types are spelled out here rather than imported from metahub, so that a test checks the
product against the specification's strings, not against the product's own copy of them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from metahub.oci.index import Index

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
# Every manifest type, as docker's Accept header offers them.
ACCEPT_ALL = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

# BuildKit's annotations that tie an attestation manifest to the image it describes.
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"

AMD64 = {"os": "linux", "architecture": "amd64"}
AMD64_V2 = {"os": "linux", "architecture": "amd64", "variant": "v2"}
AMD64_V3 = {"os": "linux", "architecture": "amd64", "variant": "v3"}
ARM64 = {"os": "linux", "architecture": "arm64"}
ARM64_V8 = {"os": "linux", "architecture": "arm64", "variant": "v8"}
ARM_V7 = {"os": "linux", "architecture": "arm", "variant": "v7"}
# The platform BuildKit gives attestation manifests.
UNKNOWN = {"os": "unknown", "architecture": "unknown"}


def sha256(data: bytes) -> str:
    """The digest of `data`, hashed here rather than taken from the code under test."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha(label: str) -> str:
    """A digest that stands for the manifest named `label` (its bytes are never needed)."""
    return sha256(label.encode())


def entry(
    label: str, platform: dict[str, Any] | None, *features: str, **extra: Any
) -> dict[str, Any]:
    """An index entry for the manifest `label`, with `features` added to its platform."""
    descriptor: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": sha(label), "size": 321}
    if platform is not None:
        descriptor["platform"] = dict(platform)
        if features:
            descriptor["platform"]["features"] = list(features)
    descriptor.update(extra)
    return descriptor


def attestation(label: str, of: str) -> dict[str, Any]:
    """BuildKit's attestation manifest `label` for the image manifest `of`."""
    return {
        "mediaType": OCI_MANIFEST,
        "digest": sha(label),
        "size": 99,
        "platform": dict(UNKNOWN),
        "annotations": {REFERENCE_TYPE: "attestation-manifest", REFERENCE_DIGEST: sha(of)},
    }


def index_document(*descriptors: dict[str, Any], **top: Any) -> dict[str, Any]:
    """An OCI image index of `descriptors`, with any other top-level fields in `top`."""
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, **top, "manifests": list(descriptors)}


def index_bytes(*descriptors: dict[str, Any], **top: Any) -> bytes:
    return json.dumps(index_document(*descriptors, **top)).encode()


def make_index(*descriptors: dict[str, Any], **top: Any) -> Index:
    """The parsed index, as selection and the manifest service see it."""
    return Index.parse(index_bytes(*descriptors, **top))
