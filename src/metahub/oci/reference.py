"""Repository names and tags, validated by the distribution spec's grammar.

`validate_*` raise ValueErrors for any caller. `checked_*` raise the registry's errors
(NAME_INVALID, TAG_INVALID, DIGEST_INVALID, all 400): the one place that a client's bad name,
tag or digest is answered, for the registry routes and the image references of explain alike.
"""

from __future__ import annotations

import re
from typing import Any

from metahub import errors
from metahub.oci.digest import Digest, InvalidDigest, looks_like_digest

# distribution-spec v1.1, "Pulling manifests": the name and tag grammars.
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*\Z")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
# `\Z`, not `$`: `$` also matches before a trailing newline.
# Many clients limit the whole name to 255 characters; distribution does too.
MAX_NAME_LENGTH = 255


_COMPONENT_RE = re.compile(rf"^{_NAME_COMPONENT}\Z")


def is_path_component(text: str) -> bool:
    """Whether `text` is one component of a repository name (no '/')."""
    return bool(_COMPONENT_RE.match(text))


class InvalidName(ValueError):
    pass


class InvalidTag(ValueError):
    pass


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"repository name is longer than {MAX_NAME_LENGTH} characters")
    if not NAME_RE.match(name):
        raise InvalidName(
            f"invalid repository name {name!r}: components must be lowercase letters and digits "
            "separated by '.', '_', '__' or '-', joined by '/'"
        )
    return name


def validate_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise InvalidTag(
            f"invalid tag {tag!r}: a tag is 1-128 characters of [a-zA-Z0-9_.-] "
            "and does not start with '.' or '-'"
        )
    return tag


def split_image(image: str) -> tuple[str, str]:
    """Split `name:tag` or `name@digest` (a tag defaults to `latest`) for the CLI and the API."""
    if "@" in image:
        name, _, ref = image.partition("@")
        return name, ref
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def checked_name(name: str, *, detail: Any = None) -> str:
    try:
        return validate_name(name)
    except InvalidName as exc:
        raise errors.NameInvalid(str(exc), detail=detail or {"name": name}) from exc


def checked_digest(digest: str, *, detail: Any = None) -> str:
    try:
        Digest.parse(digest)
    except InvalidDigest as exc:
        raise errors.DigestInvalid(str(exc), detail=detail or {"digest": digest}) from exc
    return digest


def checked_reference(reference: str, *, detail: Any = None) -> str:
    """A tag, or a digest (anything with a ':')."""
    if looks_like_digest(reference):
        return checked_digest(reference, detail=detail)
    try:
        return validate_tag(reference)
    except InvalidTag as exc:
        raise errors.TagInvalid(str(exc), detail=detail or {"tag": reference}) from exc


def parse_image(image: str) -> tuple[str, str]:
    """`name:tag` or `name@digest`, each part checked: a RegistryError (400) names what is wrong."""
    name, reference = split_image(image)
    detail = {"image": image}
    return checked_name(name, detail=detail), checked_reference(reference, detail=detail)
