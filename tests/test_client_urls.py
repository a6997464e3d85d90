"""A registry's API root from what an operator writes, and which URLs share its origin."""

from __future__ import annotations

import pytest

from metahub.client.urls import base_url, host_of, is_loopback, same_origin

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


# -- is_loopback, host_of, same_origin -------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("a.localhost", True),
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("mylocalhost", False),
        ("localhost.example.com", False),
        ("10.0.0.7", False),
        ("0.0.0.0", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    ("hostport", "expected"),
    [
        ("example.org", "example.org"),
        ("example.org:5000", "example.org"),
        ("127.0.0.1:5000", "127.0.0.1"),
        ("[::1]:5000", "::1"),
        ("[::1]", "::1"),
    ],
)
def test_host_of(hostport: str, expected: str) -> None:
    assert host_of(hostport) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000/v2/a/tags/list?last=b", True),
        ("https://r.example", "https://R.EXAMPLE:443/v2/", True),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5001/v2/", False),
        ("http://127.0.0.1:5000", "http://localhost:5000/v2/", False),
        ("https://r.example", "http://r.example/v2/", False),
        ("https://r.example", "https://cdn.r.example/blob", False),
    ],
)
def test_same_origin_is_scheme_host_and_port(a: str, b: str, expected: bool) -> None:
    assert same_origin(a, b) is expected
