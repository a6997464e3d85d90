"""What `/token` grants (distribution's scope grammar) and how Basic credentials are read."""

from __future__ import annotations

import base64

import pytest

from metahub.server.authn import basic_credentials
from metahub.server.token import pull_repositories

SCOPE_CASES = [
    (["repository:library/ubuntu:pull"], ["library/ubuntu"]),
    (["repository:a:pull,push"], ["a"]),
    (["repository:a:push,pull"], ["a"]),
    (["repository:a:delete,pull"], ["a"]),
    (["repository:a:*"], ["a"]),
    (["repository:a/b/c:pull"], ["a/b/c"]),
    (["repository:a__b:pull"], ["a__b"]),
    (["repository:a:pull repository:b:pull"], ["a", "b"]),
    (["repository:a:pull", "repository:b:pull"], ["a", "b"]),
    (["repository:b:pull", "repository:a:pull"], ["b", "a"]),
    (["repository:a:pull", "repository:a:pull,push"], ["a"]),
    (["repository:a:pull repository:a:pull"], ["a"]),
    (["registry:catalog:*", "repository:a:pull"], ["a"]),
    (["repository:a:push"], []),
    (["repository:a:delete"], []),
    (["repository:a:"], []),
    (["repository:a:Pull"], []),
    (["registry:catalog:*"], []),
    (["repository(plugin):a:pull"], []),
    (["repository:a"], []),
    (["repository"], []),
    (["repository::pull"], []),
    (["repository:Upper:pull"], []),
    (["repository:a//b:pull"], []),
    (["repository:a___b:pull"], []),
    (["repository:-a:pull"], []),
    (["repository:localhost:5000/a:pull"], []),
    (["repository:foo\n:pull"], []),
    (["repository:a/b\n:pull"], []),
    ([""], []),
    (["  "], []),
    ([], []),
]


@pytest.mark.parametrize(
    ("scopes", "granted"),
    SCOPE_CASES,
    ids=[" ".join(map(repr, s)) or "none" for s, _ in SCOPE_CASES],
)
def test_pull_repositories(scopes: list[str], granted: list[str]) -> None:
    assert pull_repositories(scopes) == granted


def basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic(b"gpu:secret"), ("gpu", "secret")),
        ("basic " + base64.b64encode(b"gpu:secret").decode(), ("gpu", "secret")),
        ("BASIC " + base64.b64encode(b"gpu:secret").decode(), ("gpu", "secret")),
        (basic(b"gpu:se:cr:et"), ("gpu", "se:cr:et")),
        (basic(b"gpu:"), ("gpu", "")),
        (basic(b":secret"), ("", "secret")),
        (basic("mäschine:pässwort".encode()), ("mäschine", "pässwort")),
        (basic(b"gpu:pass word "), ("gpu", "pass word ")),
        ("Basic  " + base64.b64encode(b"a:b").decode() + "  ", ("a", "b")),
    ],
)
def test_basic_credentials(header: str, expected: tuple[str, str]) -> None:
    assert basic_credentials(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("Basic", id="scheme-only"),
        pytest.param("Basic ", id="no-credentials"),
        pytest.param(basic(b"no-colon"), id="no-colon"),
        pytest.param(basic(b""), id="empty-credentials"),
        pytest.param("Basic !!!!", id="not-base64"),
        pytest.param("Basic " + base64.b64encode(b"ab:c").decode().rstrip("="), id="unpadded"),
        pytest.param("Basic " + base64.urlsafe_b64encode(b"\xfb\xff:x").decode(), id="urlsafe"),
        pytest.param(basic(b"\xff\xfe:x"), id="not-utf8"),
        pytest.param("Bearer " + base64.b64encode(b"a:b").decode(), id="bearer"),
        pytest.param("Digest username=a", id="digest"),
        pytest.param(base64.b64encode(b"a:b").decode(), id="no-scheme"),
    ],
)
def test_basic_credentials_rejects(header: str) -> None:
    assert basic_credentials(header) is None
