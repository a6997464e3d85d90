"""Media types and Accept negotiation, against the strings of the OCI and Docker specs."""

from __future__ import annotations

import pytest

from metahub.oci import mediatypes as mt

# Typed from image-spec (media-types.md) and Docker's manifest v2 schema 2 document.
SPEC_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SPEC_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SPEC_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
SPEC_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
SPEC_DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"


def test_constants_are_the_spec_strings() -> None:
    assert mt.OCI_INDEX == SPEC_OCI_INDEX
    assert mt.OCI_MANIFEST == SPEC_OCI_MANIFEST
    assert mt.DOCKER_MANIFEST_LIST == SPEC_DOCKER_LIST
    assert mt.DOCKER_MANIFEST == SPEC_DOCKER_MANIFEST
    assert mt.DOCKER_MANIFEST_V1_SIGNED == SPEC_DOCKER_V1_SIGNED


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        (SPEC_OCI_INDEX, True),
        (SPEC_DOCKER_LIST, True),
        (SPEC_OCI_MANIFEST, False),
        (SPEC_DOCKER_MANIFEST, False),
        (SPEC_DOCKER_V1_SIGNED, False),
        ("application/json", False),
        ("", False),
    ],
)
def test_is_index(media_type: str, expected: bool) -> None:
    assert mt.is_index(media_type) is expected


def test_type_sets() -> None:
    assert {SPEC_OCI_INDEX, SPEC_DOCKER_LIST} == mt.INDEX_TYPES
    assert {SPEC_OCI_MANIFEST, SPEC_DOCKER_MANIFEST} == mt.IMAGE_MANIFEST_TYPES
    assert mt.INDEX_TYPES <= mt.MANIFEST_TYPES
    assert mt.IMAGE_MANIFEST_TYPES <= mt.MANIFEST_TYPES
    assert SPEC_DOCKER_V1_SIGNED in mt.MANIFEST_TYPES
    assert not mt.INDEX_TYPES & mt.IMAGE_MANIFEST_TYPES


def test_upstream_accept_asks_for_indexes_first() -> None:
    offered = [part.strip() for part in mt.UPSTREAM_ACCEPT.split(",")]
    assert len(offered) == len(set(offered))
    for wanted in (
        SPEC_OCI_INDEX,
        SPEC_DOCKER_LIST,
        SPEC_OCI_MANIFEST,
        SPEC_DOCKER_MANIFEST,
        SPEC_DOCKER_V1_SIGNED,
    ):
        assert wanted in offered
    last_index = max(offered.index(SPEC_OCI_INDEX), offered.index(SPEC_DOCKER_LIST))
    first_manifest = min(offered.index(SPEC_OCI_MANIFEST), offered.index(SPEC_DOCKER_MANIFEST))
    assert last_index < first_manifest


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, True),
        ("", True),
        ("*/*", True),
        ("application/*", True),
        (SPEC_OCI_INDEX, True),
        (SPEC_DOCKER_LIST, True),
        (SPEC_OCI_INDEX.upper(), True),
        (f"{SPEC_OCI_MANIFEST}, {SPEC_OCI_INDEX}", True),
        (f"{SPEC_DOCKER_MANIFEST},{SPEC_DOCKER_LIST};q=0.5", True),
        (f"  {SPEC_OCI_INDEX}  ; charset=utf-8", True),
        ("text/html, */*;q=0.1", True),
        (SPEC_OCI_MANIFEST, False),
        (SPEC_DOCKER_MANIFEST, False),
        (f"{SPEC_OCI_MANIFEST}, {SPEC_DOCKER_MANIFEST}", False),
        (SPEC_DOCKER_V1_SIGNED, False),
        ("application/json", False),
        ("text/*", False),
        (f"{SPEC_OCI_INDEX}x", False),
    ],
)
def test_accepts_index(accept: str | None, expected: bool) -> None:
    assert mt.accepts_index(accept) is expected
