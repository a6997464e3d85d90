"""The registry upstream's pure helpers: its API root, repository names, and header parsing."""

from __future__ import annotations

import json

import pytest

from metahub import errors
from metahub.upstream.registry import (
    RegistryUpstream,
    _parse_content_range,
    base_url,
    media_type_of,
    next_link,
)
from tests.support.oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

DOCKER_HUB = "https://registry-1.docker.io"

# -- base_url ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("registry.example.com", "https://registry.example.com"),
        ("registry.example.com:5000", "https://registry.example.com:5000"),
        ("ghcr.io", "https://ghcr.io"),
        ("10.0.0.7:5000", "https://10.0.0.7:5000"),
        ("0.0.0.0:5000", "https://0.0.0.0:5000"),
        ("localhost.example.com", "https://localhost.example.com"),
        ("mylocalhost:5000", "https://mylocalhost:5000"),
    ],
)
def test_https_by_default(url: str, expected: str) -> None:
    assert base_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.8.9.10:5000", "http://127.8.9.10:5000"),
        ("[::1]", "http://[::1]"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("::1", "http://[::1]"),
        ("localhost", "http://localhost"),
        ("localhost:5000", "http://localhost:5000"),
        ("LocalHost:5000", "http://LocalHost:5000"),
        ("foo.localhost", "http://foo.localhost"),
        ("registry.foo.localhost:5000", "http://registry.foo.localhost:5000"),
    ],
)
def test_http_for_loopback_and_localhost(url: str, expected: str) -> None:
    assert base_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("registry.example.com", "http://registry.example.com"),
        ("10.0.0.7:5000", "http://10.0.0.7:5000"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        # An explicit scheme is what the operator asked for, insecure or not.
        ("https://registry.example.com", "https://registry.example.com"),
    ],
)
def test_insecure_means_http_for_any_host(url: str, expected: str) -> None:
    assert base_url(url, insecure=True) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://registry.example.com",
        "https://registry.example.com:8443",
        "https://127.0.0.1:5000",
        "http://10.0.0.7:5000/prefix",
    ],
)
def test_an_explicit_scheme_is_kept(url: str) -> None:
    assert base_url(url) == url
    assert base_url(url, insecure=True) == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://registry.example.com/", "https://registry.example.com"),
        ("registry.example.com:5000/", "https://registry.example.com:5000"),
        ("http://10.0.0.7:5000/prefix/", "http://10.0.0.7:5000/prefix"),
        ("localhost:5000//", "http://localhost:5000"),
    ],
)
def test_trailing_slashes_are_removed(url: str, expected: str) -> None:
    assert base_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "https://docker.io",
        "https://index.docker.io/",
        "https://registry-1.docker.io/",
        "http://docker.io",
        "docker.io:443",
    ],
)
def test_docker_hub_names_mean_its_api_host(url: str) -> None:
    assert base_url(url) == DOCKER_HUB
    assert base_url(url, insecure=True) == DOCKER_HUB


# -- RegistryUpstream ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["docker.io", "index.docker.io", "https://registry-1.docker.io"])
def test_docker_hub_official_images_live_under_library(url: str) -> None:
    upstream = RegistryUpstream(url)
    assert upstream.url == DOCKER_HUB
    assert upstream.repository("busybox") == "library/busybox"
    assert upstream.repository("library/busybox") == "library/busybox"
    assert upstream.repository("qnib/bench") == "qnib/bench"
    assert upstream.repository("a/b/c") == "a/b/c"


@pytest.mark.parametrize("url", ["ghcr.io", "127.0.0.1:5000", "registry.example.com/"])
def test_other_registries_keep_names_as_they_are(url: str) -> None:
    upstream = RegistryUpstream(url)
    assert upstream.repository("busybox") == "busybox"
    assert upstream.repository("qnib/bench") == "qnib/bench"


def test_description_names_the_upstream() -> None:
    assert RegistryUpstream("127.0.0.1:5000").description == "upstream http://127.0.0.1:5000"
    assert RegistryUpstream("docker.io").description == f"upstream {DOCKER_HUB}"


# -- next_link ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ('</v2/a/tags/list?n=2&last=b>; rel="next"', "/v2/a/tags/list?n=2&last=b"),
        ('</v2/a/tags/list?n=2&last=b>;rel="next"', "/v2/a/tags/list?n=2&last=b"),
        ('</v2/a/tags/list?last=b> ; rel = "next"', "/v2/a/tags/list?last=b"),
        (
            '<https://r.example/v2/a/tags/list?last=b>; rel="next"',
            "https://r.example/v2/a/tags/list?last=b",
        ),
        (
            '</v2/a/tags/list?last=a>; rel="prev", </v2/a/tags/list?last=c>; rel="next"',
            "/v2/a/tags/list?last=c",
        ),
        ('</v2/a/tags/list?last=a>; rel="prev"', None),
        ("</v2/a/tags/list?last=a>", None),
    ],
)
def test_next_link(header: str | None, expected: str | None) -> None:
    assert next_link(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("</v2/a/tags/list?last=b>; rel=next", id="token-form"),
        pytest.param('</v2/a/tags/list?last=b>; rel="NEXT"', id="upper-case"),
    ],
)
def test_next_link_accepts_every_spelling_rfc_8288_allows(header: str) -> None:
    # RFC 8288 section 3: a parameter value is a token or a quoted string, and relation types
    # compare case-insensitively.
    assert next_link(header) == "/v2/a/tags/list?last=b"


# -- _parse_content_range -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes 0-99/1000", (0, 99, 1000)),
        ("bytes 5-5/6", (5, 5, 6)),
        ("bytes 262144-524287/9999999", (262144, 524287, 9999999)),
    ],
)
def test_parse_content_range(header: str, expected: tuple[int, int, int]) -> None:
    assert _parse_content_range(header) == expected


@pytest.mark.parametrize(
    "header", [None, "", "bytes", "bytes */1000", "bytes 0-99/*", "bytes 0-99", "bytes a-b/c"]
)
def test_a_bad_content_range_is_an_upstream_error(header: str | None) -> None:
    with pytest.raises(errors.UpstreamError) as caught:
        _parse_content_range(header)
    assert caught.value.status == 502
    assert repr(header) in caught.value.message


# -- media_type_of --------------------------------------------------------------------------------


def document(**fields: object) -> bytes:
    return json.dumps({"schemaVersion": 2, **fields}).encode()


@pytest.mark.parametrize(
    ("header", "data", "expected"),
    [
        # A manifest media type in the header wins.
        (OCI_INDEX, document(mediaType=OCI_INDEX), OCI_INDEX),
        (DOCKER_LIST, document(mediaType=OCI_MANIFEST), DOCKER_LIST),
        (DOCKER_MANIFEST, b"", DOCKER_MANIFEST),
        (f"{OCI_MANIFEST}; charset=utf-8", document(), OCI_MANIFEST),
        (f"  {OCI_INDEX} ;q=1", document(), OCI_INDEX),
        # Otherwise the document's own mediaType decides.
        ("application/json", document(mediaType=OCI_INDEX), OCI_INDEX),
        ("application/json; charset=utf-8", document(mediaType=DOCKER_LIST), DOCKER_LIST),
        ("text/plain", document(mediaType=DOCKER_MANIFEST), DOCKER_MANIFEST),
        (None, document(mediaType=OCI_INDEX), OCI_INDEX),
        ("", document(mediaType=DOCKER_MANIFEST), DOCKER_MANIFEST),
        # With neither, an OCI manifest is assumed.
        (None, document(), OCI_MANIFEST),
        (None, b"not json", OCI_MANIFEST),
        (None, b"[1, 2]", OCI_MANIFEST),
        (None, b"null", OCI_MANIFEST),
        (None, document(mediaType=""), OCI_MANIFEST),
        (None, document(mediaType=7), OCI_MANIFEST),
    ],
)
def test_media_type(header: str | None, data: bytes, expected: str) -> None:
    assert media_type_of(header, data) == expected
