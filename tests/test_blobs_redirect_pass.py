"""`blobs.redirect: pass`: the upstream's storage redirect goes to the client, and the blob's
bytes never cross MetaHub; a redirect that carries anything of ours is followed as before.

The upstream is a scripted registry that wants Basic credentials and redirects blob GETs to a
second server (the "CDN", on another loopback address) that records every request and counts
the bytes it sends; MetaHub is a real `metahub serve`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from yarl import URL

from metahub.client.redirects import RedirectPolicy, passable
from metahub.config import ConfigError, parse_config
from tests.support.measured import MeasuredMetaHub
from tests.support.scripted_registry import (
    CDN_HOST,
    UPSTREAM_CREDENTIALS,
    Blob,
    ScriptedRegistry,
    relaying_config,
)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedRegistry]:
    with ScriptedRegistry(basic_auth=UPSTREAM_CREDENTIALS) as server:
        yield server


@pytest.fixture(scope="module")
def cdn() -> Iterator[ScriptedRegistry]:
    with ScriptedRegistry(CDN_HOST) as server:
        yield server


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedRegistry
) -> Iterator[MeasuredMetaHub]:
    config = relaying_config(upstream, blobs={"redirect": "pass"})
    with MeasuredMetaHub(tmp_path_factory.mktemp("redirect-pass"), config) as server:
        yield server


@pytest.fixture
def client(hub: MeasuredMetaHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hub.url, timeout=60) as http:
        yield http


def test_the_storage_redirect_reaches_the_client_and_the_bytes_never_cross_metahub(
    client: httpx.Client, upstream: ScriptedRegistry, cdn: ScriptedRegistry
):
    blob = Blob(os.urandom(MiB), repeat=8)
    cdn.add_blob(blob)
    upstream.add_blob(Blob(blob.block, repeat=8, redirect_to=cdn.url))
    path = f"/v2/pass/plain/blobs/{blob.digest}"

    answer = client.get(path)

    assert answer.status_code == 307
    assert answer.headers["location"] == f"{cdn.url}{path}?signature=scripted"
    assert answer.headers["docker-content-digest"] == blob.digest
    assert answer.content == b""
    asked = upstream.requests("GET", path)  # meeting the 401 challenge first, as usual
    assert asked[-1].headers["Authorization"].startswith("Basic ")
    assert cdn.count(path=path) == 0  # ... and did not go on to the storage itself
    assert upstream.sent[path] == 0

    with httpx.Client(timeout=60) as direct:  # the client follows, as docker does
        fetched = direct.get(answer.headers["location"])
    assert fetched.content == blob.content()
    (followed,) = cdn.requests("GET", path)
    assert followed.headers["User-Agent"].startswith("python-httpx")  # the client, not MetaHub
    assert "Authorization" not in followed.headers
    assert cdn.sent[path] == blob.size


def test_a_range_is_passed_on_too(client: httpx.Client, upstream: ScriptedRegistry, cdn):
    blob = Blob(os.urandom(2 * MiB))
    cdn.add_blob(blob)
    upstream.add_blob(Blob(blob.block, redirect_to=cdn.url))
    path = f"/v2/pass/range/blobs/{blob.digest}"

    answer = client.get(path, headers={"Range": "bytes=1000-1099"}, follow_redirects=True)

    assert answer.status_code == 206
    assert answer.content == blob.content()[1000:1100]
    (followed,) = cdn.requests("GET", path)
    assert followed.headers["Range"] == "bytes=1000-1099"
    assert upstream.requests("GET", path)[0].headers["Range"] == "bytes=1000-1099"


def test_a_redirect_with_credentials_in_its_url_is_followed_not_passed(
    client: httpx.Client, upstream: ScriptedRegistry, cdn: ScriptedRegistry
):
    blob = Blob(os.urandom(MiB))
    cdn.add_blob(blob)
    with_userinfo = str(URL(cdn.url).with_user("proxy").with_password("upstream-secret"))
    upstream.add_blob(Blob(blob.block, redirect_to=with_userinfo.rstrip("/")))
    path = f"/v2/pass/userinfo/blobs/{blob.digest}"

    answer = client.get(path)

    assert answer.status_code == 200  # relayed by MetaHub, which followed the redirect
    assert "upstream-secret" not in str(answer.headers)
    assert answer.content == blob.content()
    (followed,) = cdn.requests("GET", path)
    assert not followed.headers["User-Agent"].startswith("python-httpx")
    assert cdn.sent[path] == blob.size


def test_a_blob_the_upstream_serves_itself_is_relayed(
    client: httpx.Client, upstream: ScriptedRegistry
):
    blob = upstream.add_blob(Blob(os.urandom(MiB)))

    answer = client.get(f"/v2/pass/served/blobs/{blob.digest}")

    assert answer.status_code == 200
    assert answer.content == blob.content()


def test_an_unknown_blob_is_still_blob_unknown(client: httpx.Client):
    answer = client.get(f"/v2/pass/none/blobs/sha256:{'1' * 64}")

    assert answer.status_code == 404
    assert answer.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


REGISTRY = "https://registry.example.org"
POLICY = RedirectPolicy(("storage.example.net", "*.s3.amazonaws.com"))


@pytest.mark.parametrize(
    ("target", "secrets", "expected"),
    [
        pytest.param("https://storage.example.net/b/1?X-Sig=abc", [], True, id="presigned"),
        pytest.param("https://bucket.s3.amazonaws.com/x?sig=1", ["tok"], True, id="s3"),
        pytest.param("https://registry.example.org/storage/1", [], False, id="own-origin"),
        pytest.param("https://u:p@storage.example.net/b/1", [], False, id="userinfo"),
        pytest.param("https://u@storage.example.net/b/1", [], False, id="user-only"),
        pytest.param("https://storage.example.net/b?t=tok123", ["tok123"], False, id="our-token"),
        pytest.param("https://storage.example.net/b?p=s%20cret", ["s cret"], False, id="quoted"),
        pytest.param("https://storage.example.net/b/1", [""], True, id="no-secret"),
        pytest.param("https://elsewhere.example.com/b/1", [], False, id="not-allowed-host"),
        pytest.param("http://storage.example.net/b/1", [], False, id="https-to-http"),
        pytest.param("ftp://storage.example.net/b/1", [], False, id="not-http"),
    ],
)
def test_passable(target: str, secrets: list[str], expected: bool) -> None:
    assert passable(POLICY, REGISTRY, URL(target), secrets) is expected


def test_pass_and_a_blob_cache_are_refused_together() -> None:
    config = {
        "upstream": {"url": "https://registry.example.org"},
        "blobs": {"redirect": "pass"},
        "cache": {"blobs": {"path": "/var/cache/metahub"}},
    }
    with pytest.raises(ConfigError, match=r"blobs\.redirect: pass and cache\.blobs"):
        parse_config(config)


def test_redirects_are_followed_by_default() -> None:
    settings = parse_config({"upstream": {"url": "https://registry.example.org"}})
    assert settings.blobs.redirect == "follow"
