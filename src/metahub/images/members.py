"""Resolving a spec's members into index entries: digest, size, media type and platform.

A member that is an image manifest becomes one entry. Its platform is the spec's; fields the
spec leaves out (all of them when it gives no `platform`) come from the image config, as
manifest-tool does, and `features` only ever come from the spec.

A member that is itself an index (a multi-arch image, or what buildx pushes: the image plus an
attestation manifest) is expanded: each of its entries becomes an entry. The spec's
`architecture`, `os`, `variant` and `osversion` then select which of them to take, and its
`features` and `osfeatures` are added to each taken one. Attestation manifests are taken along
with the image they describe. A member index that holds another index is refused.

Manifests are read from wherever the caller says (a registry client when publishing, the
upstream when serving a virtual image) and never re-serialized: the entry points at the exact
bytes the member's repository holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from metahub.images.errors import ImageError
from metahub.images.spec import ImageRef, ImageSpec, MemberSpec, PlatformSpec
from metahub.oci import mediatypes
from metahub.oci.index import Index, InvalidIndex

ATTESTATION_TYPE = "vnd.docker.reference.type"
ATTESTATION_DIGEST = "vnd.docker.reference.digest"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# Layers a registry does not store (Windows base layers): they are fetched from their `urls`.
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


class MemberError(ImageError, ValueError):
    """A member that cannot become an entry; the message names it (`manifests.N`)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A manifest exactly as its repository holds it."""

    data: bytes
    media_type: str
    digest: str


class Source(Protocol):
    """Where members are read from."""

    description: str

    async def manifest(self, repository: str, reference: str) -> Fetched: ...

    async def blob(self, repository: str, digest: str, limit: int) -> bytes:
        """A small blob (an image config) whole, verified against its digest."""
        ...


# A member's reference -> the source holding it and its repository name there.
SourceFor = Callable[[ImageRef], tuple[Source, str]]


@dataclass(frozen=True, slots=True)
class Resolved:
    """One entry of the index to be, with where its content lives."""

    member: int  # position in the spec's `manifests`
    ref: ImageRef  # the member as the spec names it
    repository: str  # its repository in `source`
    source: Source
    descriptor: dict[str, Any]  # the index entry
    manifest: bytes  # the exact bytes `descriptor` points at
    blobs: tuple[dict[str, Any], ...] = field(default=())  # config and layers it references

    @property
    def digest(self) -> str:
        return str(self.descriptor["digest"])

    @property
    def media_type(self) -> str:
        return str(self.descriptor["mediaType"])

    @property
    def is_attestation(self) -> bool:
        return is_attestation(self.descriptor)


def is_attestation(descriptor: dict[str, Any]) -> bool:
    annotations = descriptor.get("annotations")
    return isinstance(annotations, dict) and ATTESTATION_TYPE in annotations


def member_label(spec: ImageSpec, position: int) -> str:
    return f"manifests.{position} ({spec.manifests[position].image})"


async def resolve_members(spec: ImageSpec, source_for: SourceFor) -> list[Resolved]:
    """Every entry of the index `spec` describes, in the spec's order."""
    groups = await asyncio.gather(
        *(
            _resolve(spec, position, member, source_for)
            for position, member in enumerate(spec.manifests)
        )
    )
    return [entry for group in groups for entry in group]


async def _resolve(
    spec: ImageSpec, position: int, member: MemberSpec, source_for: SourceFor
) -> list[Resolved]:
    label = member_label(spec, position)
    ref = member.ref
    source, repository = source_for(ref)
    fetched = await source.manifest(repository, ref.reference)
    if mediatypes.is_index(fetched.media_type):
        return await _expand(label, position, ref, member.platform, source, repository, fetched)
    if fetched.media_type not in mediatypes.IMAGE_MANIFEST_TYPES:
        raise MemberError(f"{label} is a {fetched.media_type}, not an image manifest or index")
    document = _json(label, fetched.data)
    platform = await _image_platform(label, member.platform, source, repository, document)
    descriptor = {
        "mediaType": fetched.media_type,
        "digest": fetched.digest,
        "size": len(fetched.data),
        "platform": platform,
    }
    blobs = manifest_blobs(document)
    return [Resolved(position, ref, repository, source, descriptor, fetched.data, blobs)]


async def _image_platform(
    label: str,
    spec: PlatformSpec | None,
    source: Source,
    repository: str,
    manifest: dict[str, Any],
) -> dict[str, Any]:
    spec = spec or PlatformSpec()
    config: dict[str, Any] = {}
    if not (spec.architecture and spec.os):
        config = await _config(label, source, repository, manifest)
    architecture = spec.architecture or _text(config.get("architecture"))
    os = spec.os or _text(config.get("os"))
    if not architecture or not os:
        raise MemberError(
            f"{label}: its image config names no os/architecture; "
            "give platform.os and platform.architecture"
        )
    platform: dict[str, Any] = {"architecture": architecture, "os": os}
    os_version = spec.osversion or _text(config.get("os.version"))
    if os_version:
        platform["os.version"] = os_version
    os_features = list(spec.osfeatures) or _texts(config.get("os.features"))
    if os_features:
        platform["os.features"] = os_features
    variant = spec.variant or _text(config.get("variant"))
    if variant:
        platform["variant"] = variant
    if spec.features:
        platform["features"] = list(spec.features)
    return platform


async def _config(
    label: str, source: Source, repository: str, manifest: dict[str, Any]
) -> dict[str, Any]:
    descriptor = manifest.get("config")
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    if not isinstance(digest, str):
        raise MemberError(f"{label}: its manifest has no config to read the platform from")
    data = await source.blob(repository, digest, MAX_CONFIG_BYTES)
    config = _json(f"{label}: image config", data)
    return config


async def _expand(
    label: str,
    position: int,
    ref: ImageRef,
    spec: PlatformSpec | None,
    source: Source,
    repository: str,
    fetched: Fetched,
) -> list[Resolved]:
    try:
        index = Index.parse(fetched.data)
    except InvalidIndex as exc:
        raise MemberError(f"{label}: {exc}") from exc
    wanted = _selectors(spec)
    chosen: list[dict[str, Any]] = []
    offered: list[str] = []
    for entry in index.entries:
        descriptor = entry.descriptor
        if mediatypes.is_index(entry.media_type):
            raise MemberError(f"{label} is an index that holds another index ({entry.digest})")
        if is_attestation(descriptor):
            continue
        platform = descriptor.get("platform")
        if not isinstance(platform, dict):
            if not wanted and spec is None:
                chosen.append(descriptor)
            continue
        offered.append(_platform_text(platform))
        if all(platform.get(key) == value for key, value in wanted.items()):
            chosen.append({**descriptor, "platform": _add_features(platform, spec)})
    if not chosen:
        wanted_text = ", ".join(f"{k}={v}" for k, v in wanted.items()) or "any platform"
        raise MemberError(
            f"{label}: no entry of the index fits {wanted_text}; "
            f"it offers {', '.join(offered) or 'nothing'}"
        )
    digests = {str(d.get("digest")) for d in chosen}
    for entry in index.entries:  # attestations follow the images they describe, in index order
        annotations = entry.annotations
        if is_attestation(entry.descriptor) and annotations.get(ATTESTATION_DIGEST) in digests:
            chosen.append(entry.descriptor)
    order = {entry.digest: entry.position for entry in index.entries}
    chosen.sort(key=lambda d: order.get(str(d.get("digest")), 0))
    children = await asyncio.gather(
        *(source.manifest(repository, str(d.get("digest"))) for d in chosen)
    )
    resolved = []
    for descriptor, child in zip(chosen, children, strict=True):
        if child.digest != descriptor.get("digest"):
            raise MemberError(f"{label}: entry {descriptor.get('digest')} came back as {child}")
        document = _json(f"{label}: {child.digest}", child.data)
        blobs = manifest_blobs(document)
        resolved.append(Resolved(position, ref, repository, source, descriptor, child.data, blobs))
    return resolved


def _selectors(spec: PlatformSpec | None) -> dict[str, str]:
    if spec is None:
        return {}
    pairs = {
        "architecture": spec.architecture,
        "os": spec.os,
        "variant": spec.variant,
        "os.version": spec.osversion,
    }
    return {key: value for key, value in pairs.items() if value is not None}


def _add_features(platform: dict[str, Any], spec: PlatformSpec | None) -> dict[str, Any]:
    if spec is None or not (spec.features or spec.osfeatures):
        return platform
    merged = dict(platform)
    for key, extra in (("os.features", spec.osfeatures), ("features", spec.features)):
        if extra:
            have = _texts(merged.get(key))
            merged[key] = have + [value for value in extra if value not in have]
    return merged


def _platform_text(platform: dict[str, Any]) -> str:
    text = f"{platform.get('os')}/{platform.get('architecture')}"
    if platform.get("variant"):
        text += f"/{platform['variant']}"
    return text


def manifest_blobs(document: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The blobs an image manifest references that a registry stores: config, then layers."""
    blobs: list[dict[str, Any]] = []
    config = document.get("config")
    if isinstance(config, dict) and isinstance(config.get("digest"), str):
        blobs.append(config)
    layers = document.get("layers")
    for layer in layers if isinstance(layers, list) else ():
        if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
            continue
        if layer.get("mediaType") in FOREIGN_LAYER_TYPES and layer.get("urls"):
            continue
        blobs.append(layer)
    return tuple(blobs)


def _json(label: str, data: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MemberError(f"{label} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MemberError(f"{label} is not a JSON object")
    return document


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _texts(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def digests_of(entries: Sequence[Resolved]) -> set[str]:
    """Every digest the entries point at: their manifests and the blobs those reference."""
    found: set[str] = set()
    for entry in entries:
        found.add(entry.digest)
        found.update(str(blob["digest"]) for blob in entry.blobs)
    return found
