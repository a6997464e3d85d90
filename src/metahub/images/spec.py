"""The index spec: manifest-tool's YAML format, with `platform.features` kept.

```yaml
image: registry.example.org/qnib/bench:latest
tags: [v1, "2024"]
manifests:
  - image: registry.example.org/qnib/plain-featuretest:cpu-skylake
    platform: {architecture: amd64, os: linux, features: [cpu:skylake]}
  - image: registry.example.org/qnib/plain-featuretest:cpu-broadwell
    platform: {architecture: amd64, os: linux, features: [cpu:broadwell]}
annotations: {org.opencontainers.image.description: "bench, per microarchitecture"}
```

The keys are manifest-tool's exactly (`osversion` and `osfeatures` become the index's
`os.version` and `os.features`). `metahub push` reads such a file; the config's `images:` holds
a list of them. Every error names the key it is about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import ValidationError, field_validator

from metahub.images.documents import FeatureTexts, StrictModel, describe, each, read_yaml
from metahub.images.errors import ImageError
from metahub.oci.digest import Digest, InvalidDigest
from metahub.oci.reference import InvalidName, InvalidTag, validate_name, validate_tag

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


class SpecError(ImageError, ValueError):
    """A spec that cannot be used; the message names the file and the key."""


class InvalidReference(ImageError, ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ImageRef:
    """`[registry/]repository[:tag][@digest]`, read the way docker reads it.

    The first component is a registry when it holds a `.` or a `:` or is `localhost`; without
    one the image is on Docker Hub, where a one-component name means `library/<name>`.
    """

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        text = text.strip()
        if not text:
            raise InvalidReference("an image reference cannot be empty")
        rest, digest = text, None
        if "@" in rest:
            rest, _, digest = rest.partition("@")
            try:
                Digest.parse(digest)
            except InvalidDigest as exc:
                raise InvalidReference(f"{text!r}: {exc}") from exc
        registry = None
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, rest = first, remainder
        tag = None
        colon = rest.rfind(":")
        if colon > rest.rfind("/"):
            rest, tag = rest[:colon], rest[colon + 1 :]
        try:
            validate_name(rest)
            if tag is not None:
                validate_tag(tag)
        except (InvalidName, InvalidTag) as exc:
            raise InvalidReference(f"{text!r}: {exc}") from exc
        return cls(registry, rest, tag, digest)

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag (`latest`)."""
        return self.digest or self.tag or "latest"

    @property
    def host(self) -> str:
        """The registry, Docker Hub when none is named."""
        if self.registry is None or self.registry in _DOCKER_HUB_ALIASES:
            return DOCKER_HUB
        return self.registry

    @property
    def remote_repository(self) -> str:
        """The repository as the registry names it (`library/` added on Docker Hub)."""
        if self.host == DOCKER_HUB and "/" not in self.repository:
            return f"library/{self.repository}"
        return self.repository

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}" if self.registry else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


class PlatformSpec(StrictModel):
    """An entry's platform. Omitted fields come from the member's image config."""

    architecture: str | None = None
    os: str | None = None
    variant: str | None = None
    features: FeatureTexts = ()
    osversion: str | None = None
    osfeatures: tuple[str, ...] = ()

    @field_validator("features")
    @classmethod
    def _distinct(cls, features: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(features)) != len(features):
            raise ValueError("a feature is listed twice")
        return features

    @field_validator("architecture", "os", "variant", "osversion")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("cannot be empty; leave the key out instead")
        return value


def _valid_reference(text: str) -> str:
    try:
        ImageRef.parse(text)
    except InvalidReference as exc:
        raise ValueError(str(exc)) from exc
    return text


class MemberSpec(StrictModel):
    """One member of the index: an image (or an index, which is expanded) and its platform."""

    image: str
    platform: PlatformSpec | None = None

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        return _valid_reference(image)

    @property
    def ref(self) -> ImageRef:
        return ImageRef.parse(self.image)


class ImageSpec(StrictModel):
    image: str
    tags: Annotated[tuple[str, ...], each(validate_tag)] = ()
    manifests: tuple[MemberSpec, ...]
    annotations: dict[str, str] = {}

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        ref = ImageRef.parse(_valid_reference(image))
        if ref.digest is not None:
            raise ValueError(f"{image!r}: the index's image is pushed by tag, not by digest")
        return image

    @field_validator("manifests")
    @classmethod
    def _members(cls, manifests: tuple[MemberSpec, ...]) -> tuple[MemberSpec, ...]:
        if not manifests:
            raise ValueError("name at least one member image")
        return manifests

    @property
    def ref(self) -> ImageRef:
        return ImageRef.parse(self.image)

    @property
    def all_tags(self) -> tuple[str, ...]:
        """The image's own tag (`latest` when it names none), then `tags`, each once."""
        tags = [self.ref.tag or "latest", *self.tags]
        return tuple(dict.fromkeys(tags))


def parse_spec(raw: Any, *, source: str = "spec") -> ImageSpec:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{source} must be a mapping with 'image' and 'manifests'")
    try:
        return ImageSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(describe(exc, source)) from exc


def load_spec(path: Path) -> ImageSpec:
    return parse_spec(read_yaml(path, "spec", SpecError), source=str(path))


def registry_host(url: str) -> str:
    """`https://Registry.example.org:5000/` -> `registry.example.org:5000`; Hub -> docker.io."""
    host = url.split("://", 1)[-1].split("/", 1)[0].lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def check_virtual_images(images: tuple[ImageSpec, ...], upstream_url: str | None) -> None:
    """What makes the config's `images:` unservable, as a ValueError naming the key.

    Virtual images are made from the upstream: an `image` may name a registry only when it is
    the upstream's. A virtual tag is defined once, and no member may be a virtual image (members
    are read from the upstream, so the index would point at nothing).
    """
    upstream_host = registry_host(upstream_url) if upstream_url else None
    defined: dict[tuple[str, str], int] = {}
    for position, spec in enumerate(images):
        refs = [(f"images.{position}.image", spec.ref)]
        refs += [
            (f"images.{position}.manifests.{i}.image", member.ref)
            for i, member in enumerate(spec.manifests)
        ]
        for key, ref in refs:
            if ref.registry is None:
                continue
            if upstream_host is None:
                raise ValueError(
                    f"{key}: {str(ref)!r} names registry {ref.registry}, but the upstream is an "
                    "OCI layout; give the repository name only"
                )
            if ref.host != upstream_host:
                raise ValueError(
                    f"{key}: {str(ref)!r} names registry {ref.registry}; virtual images are "
                    f"made from the upstream ({upstream_host}): drop the registry"
                )
        for tag in spec.all_tags:
            earlier = defined.setdefault((spec.ref.repository, tag), position)
            if earlier != position:
                raise ValueError(
                    f"images.{position}.image: {spec.ref.repository}:{tag} is already defined "
                    f"by images.{earlier}"
                )
    for position, spec in enumerate(images):
        for i, member in enumerate(spec.manifests):
            ref = member.ref
            if ref.digest is None and (ref.repository, ref.reference) in defined:
                raise ValueError(
                    f"images.{position}.manifests.{i}.image: {ref.repository}:{ref.reference} "
                    "is a virtual image; members must be images in the upstream"
                )
