"""The registry upstream's own helpers: its API root, repository names, and Content-Range."""

from __future__ import annotations

import pytest

from metahub import errors
from metahub.upstream.registry import RegistryUpstream, _parse_content_range

DOCKER_HUB = "https://registry-1.docker.io"

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


def test_a_mirror_named_docker_io_gets_library_too() -> None:
    upstream = RegistryUpstream("http://10.0.0.5:5000", registry="docker.io")
    assert upstream.repository("busybox") == "library/busybox"
    assert upstream.repository("qnib/bench") == "qnib/bench"


def test_description_names_the_upstream() -> None:
    assert RegistryUpstream("127.0.0.1:5000").description == "upstream http://127.0.0.1:5000"
    assert RegistryUpstream("docker.io").description == f"upstream {DOCKER_HUB}"


def test_one_of_several_upstreams_is_described_by_its_registry_too() -> None:
    upstream = RegistryUpstream("http://10.0.0.5:5000", registry="registry.lab:5000", named=True)
    assert upstream.description == "upstream registry.lab:5000 (http://10.0.0.5:5000)"
    assert RegistryUpstream("https://ghcr.io", named=True).description == (
        "upstream ghcr.io (https://ghcr.io)"
    )


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
