"""Repository names and tags, against distribution-spec v1.1's grammars; and the registry
errors a bad name, tag or digest is answered with.

name: `[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*`
tag:  `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
"""

from __future__ import annotations

from typing import Any

import pytest

from metahub import errors
from metahub.oci.reference import (
    InvalidName,
    InvalidTag,
    checked_digest,
    checked_name,
    checked_reference,
    parse_image,
    split_image,
    validate_name,
    validate_tag,
)

DIGEST = "sha256:" + "a" * 64

VALID_NAMES = [
    "a",
    "0",
    "ubuntu",
    "library/ubuntu",
    "a/b/c",
    "a/b/c/d/e",
    "a.b",
    "a_b",
    "a__b",
    "a-b",
    "a--b",
    "a---b",
    "a.b_c__d-e",
    "my-org/my.repo_x",
    "0a/1b",
    "a" * 255,
    "a/" * 127 + "a",  # 255 characters, 128 components
]

INVALID_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("A", id="uppercase"),
    pytest.param("Library/ubuntu", id="uppercase-first-component"),
    pytest.param("library/Ubuntu", id="uppercase-second-component"),
    pytest.param("-a", id="leading-dash"),
    pytest.param("a-", id="trailing-dash"),
    pytest.param(".a", id="leading-dot"),
    pytest.param("a.", id="trailing-dot"),
    pytest.param("_a", id="leading-underscore"),
    pytest.param("a_", id="trailing-underscore"),
    pytest.param("/a", id="leading-slash"),
    pytest.param("a/", id="trailing-slash"),
    pytest.param("a//b", id="empty-component"),
    pytest.param("a/-b", id="component-leading-dash"),
    pytest.param("a-/b", id="component-trailing-dash"),
    pytest.param("a___b", id="triple-underscore"),
    pytest.param("a..b", id="double-dot"),
    pytest.param("a._b", id="dot-underscore"),
    pytest.param("a_.b", id="underscore-dot"),
    pytest.param("a-.b", id="dash-dot"),
    pytest.param("a b", id="space"),
    pytest.param("a:b", id="colon"),
    pytest.param("a@b", id="at"),
    pytest.param("localhost:5000/a", id="host-port"),
    pytest.param("a" * 256, id="256-chars"),
    pytest.param("a/" * 127 + "ab", id="256-chars-components"),
    pytest.param("é", id="non-ascii"),
    pytest.param("foo\n", id="trailing-newline"),
    pytest.param("foo/bar\n", id="trailing-newline-nested"),
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)


def test_too_long_name_error_names_the_limit() -> None:
    with pytest.raises(InvalidName, match="255"):
        validate_name("a" * 256)


def test_invalid_name_error_quotes_the_name() -> None:
    with pytest.raises(InvalidName, match="Bad/Name"):
        validate_name("Bad/Name")


VALID_TAGS = [
    "latest",
    "v1",
    "v1.2.3",
    "1.0-rc_1",
    "_x",
    "0",
    "A",
    "UPPER",
    "x-",
    "x.",
    "x__--..y",
    "a" * 128,
    "_" * 128,
]

INVALID_TAGS = [
    pytest.param("", id="empty"),
    pytest.param("a" * 129, id="129-chars"),
    pytest.param(".x", id="leading-dot"),
    pytest.param("-x", id="leading-dash"),
    pytest.param("a b", id="space"),
    pytest.param("a/b", id="slash"),
    pytest.param("a:b", id="colon"),
    pytest.param("a@b", id="at"),
    pytest.param("a+b", id="plus"),
    pytest.param("ü", id="non-ascii"),
    pytest.param("v1\n", id="trailing-newline"),
]


@pytest.mark.parametrize("tag", VALID_TAGS)
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", INVALID_TAGS)
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(InvalidTag):
        validate_tag(tag)


def test_errors_are_value_errors() -> None:
    assert issubclass(InvalidName, ValueError)
    assert issubclass(InvalidTag, ValueError)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("ubuntu", ("ubuntu", "latest")),
        ("ubuntu:22.04", ("ubuntu", "22.04")),
        ("library/ubuntu:22.04", ("library/ubuntu", "22.04")),
        ("localhost:5000/foo", ("localhost:5000/foo", "latest")),
        ("localhost:5000/foo:1.0", ("localhost:5000/foo", "1.0")),
        ("foo@sha256:abc", ("foo", "sha256:abc")),
        ("a/b@sha256:abc", ("a/b", "sha256:abc")),
        ("localhost:5000/a@sha256:abc", ("localhost:5000/a", "sha256:abc")),
    ],
)
def test_split_image(image: str, expected: tuple[str, str]) -> None:
    assert split_image(image) == expected


@pytest.mark.parametrize(
    ("check", "value", "error", "detail"),
    [
        (checked_name, "Bad/Name", errors.NameInvalid, {"name": "Bad/Name"}),
        (checked_digest, "sha256:1234", errors.DigestInvalid, {"digest": "sha256:1234"}),
        (checked_digest, "latest", errors.DigestInvalid, {"digest": "latest"}),
        (checked_reference, "-bad", errors.TagInvalid, {"tag": "-bad"}),
        (checked_reference, "md5:00", errors.DigestInvalid, {"digest": "md5:00"}),
    ],
)
def test_checked_parts_are_registry_errors_naming_the_part(
    check: Any, value: str, error: type[errors.RegistryError], detail: dict[str, str]
) -> None:
    with pytest.raises(error) as info:
        check(value)
    assert info.value.status == 400
    assert info.value.detail == detail
    assert value in info.value.message


def test_checked_parts_pass_valid_ones_through() -> None:
    assert checked_name("library/ubuntu") == "library/ubuntu"
    assert checked_digest(DIGEST) == DIGEST
    assert checked_reference("22.04") == "22.04"
    assert checked_reference(DIGEST) == DIGEST


@pytest.mark.parametrize(
    ("image", "error"),
    [
        ("Bad/Name:1", errors.NameInvalid),
        ("ubuntu:-bad", errors.TagInvalid),
        ("ubuntu@sha256:1234", errors.DigestInvalid),
    ],
)
def test_parse_image_names_the_image(image: str, error: type[errors.RegistryError]) -> None:
    with pytest.raises(error) as info:
        parse_image(image)
    assert info.value.detail == {"image": image}
    assert parse_image(f"ubuntu@{DIGEST}") == ("ubuntu", DIGEST)
