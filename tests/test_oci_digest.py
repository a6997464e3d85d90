"""Digests: the distribution spec's `algorithm:encoded` grammar, checked against hashlib."""

from __future__ import annotations

import hashlib

import pytest

from metahub.oci.digest import Digest, InvalidDigest, looks_like_digest

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
HELLO_SHA256 = hashlib.sha256(b"hello").hexdigest()
HELLO_SHA512 = hashlib.sha512(b"hello").hexdigest()


@pytest.mark.parametrize(
    ("text", "algorithm", "hex_"),
    [
        (f"sha256:{EMPTY_SHA256}", "sha256", EMPTY_SHA256),
        (f"sha256:{HELLO_SHA256}", "sha256", HELLO_SHA256),
        (f"sha512:{HELLO_SHA512}", "sha512", HELLO_SHA512),
        ("sha256:" + "0" * 64, "sha256", "0" * 64),
        ("sha512:" + "f" * 128, "sha512", "f" * 128),
    ],
)
def test_parse_valid(text: str, algorithm: str, hex_: str) -> None:
    digest = Digest.parse(text)
    assert digest.algorithm == algorithm
    assert digest.hex == hex_
    assert str(digest) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"md5:{hashlib.md5(b'hello').hexdigest()}", id="md5"),
        pytest.param(f"sha1:{hashlib.sha1(b'hello').hexdigest()}", id="sha1"),
        pytest.param(f"sha384:{hashlib.sha384(b'hello').hexdigest()}", id="sha384"),
        pytest.param(f"SHA256:{HELLO_SHA256}", id="uppercase-algorithm"),
        pytest.param(f"sha256:{HELLO_SHA256.upper()}", id="uppercase-hex"),
        pytest.param(f"sha256:{HELLO_SHA256[:-1]}A", id="one-uppercase-hex"),
        pytest.param(f"sha256:{HELLO_SHA256[:-1]}", id="short-63"),
        pytest.param(f"sha256:{HELLO_SHA256}0", id="long-65"),
        pytest.param(f"sha256:{HELLO_SHA512}", id="sha256-with-128-hex"),
        pytest.param(f"sha512:{HELLO_SHA256}", id="sha512-with-64-hex"),
        pytest.param(f"sha512:{HELLO_SHA512[:-1]}", id="sha512-short-127"),
        pytest.param(f"sha512:{HELLO_SHA512}0", id="sha512-long-129"),
        pytest.param(f"sha256{HELLO_SHA256}", id="missing-colon"),
        pytest.param(HELLO_SHA256, id="hex-only"),
        pytest.param(f":{HELLO_SHA256}", id="empty-algorithm"),
        pytest.param("sha256:", id="empty-hex"),
        pytest.param(f"sha256::{HELLO_SHA256}", id="double-colon"),
        pytest.param(f"sha256:{HELLO_SHA256[:-1]}g", id="non-hex-letter"),
        pytest.param(f"sha256:{HELLO_SHA256[:-1]}=", id="base64-padding"),
        pytest.param(f" sha256:{HELLO_SHA256}", id="leading-space"),
        pytest.param(f"sha256:{HELLO_SHA256} ", id="trailing-space"),
        pytest.param(f"sha256:{HELLO_SHA256}\n", id="trailing-newline"),
        pytest.param(f"sha256:{HELLO_SHA256}\r\n", id="trailing-crlf"),
        pytest.param("", id="empty"),
        pytest.param("latest", id="a-tag"),
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidDigest):
        Digest.parse(text)


def test_unsupported_algorithm_is_named_in_the_error() -> None:
    with pytest.raises(InvalidDigest, match="md5"):
        Digest.parse(f"md5:{hashlib.md5(b'x').hexdigest()}")


def test_invalid_digest_is_a_value_error() -> None:
    assert issubclass(InvalidDigest, ValueError)


@pytest.mark.parametrize("data", [b"", b"hello", b"\x00" * 1000, bytes(range(256))])
def test_of_matches_hashlib(data: bytes) -> None:
    assert str(Digest.of(data)) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert str(Digest.of(data, "sha512")) == "sha512:" + hashlib.sha512(data).hexdigest()


@pytest.mark.parametrize("data", [b"", b"hello", b"x" * 100_000])
def test_of_output_parses_back(data: bytes) -> None:
    for algorithm in ("sha256", "sha512"):
        digest = Digest.of(data, algorithm)
        assert Digest.parse(str(digest)) == digest


@pytest.mark.parametrize(
    "text", [f"sha256:{HELLO_SHA256}", f"sha512:{HELLO_SHA512}"], ids=["sha256", "sha512"]
)
def test_hasher_verifies_content_incrementally(text: str) -> None:
    hasher = Digest.parse(text).hasher()
    hasher.update(b"hel")
    hasher.update(b"lo")
    assert hasher.hexdigest() == text.partition(":")[2]


def test_digests_are_values() -> None:
    a = Digest.parse(f"sha256:{HELLO_SHA256}")
    b = Digest("sha256", HELLO_SHA256)
    assert a == b
    assert hash(a) == hash(b)
    assert a != Digest("sha256", EMPTY_SHA256)
    with pytest.raises(AttributeError):
        a.hex = EMPTY_SHA256  # type: ignore[misc]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (f"sha256:{HELLO_SHA256}", True),
        ("md5:abc", True),  # meant as a digest (then rejected by Digest.parse)
        ("latest", False),
        ("v1.2.3", False),
        ("1.0-rc_1", False),
    ],
)
def test_looks_like_digest(reference: str, expected: bool) -> None:
    assert looks_like_digest(reference) is expected
