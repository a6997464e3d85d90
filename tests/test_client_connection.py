"""The registry client's connection against servers on loopback whose answers the test writes.

What it must get right wherever it is used: credentials reach only the registry's own origin
(never a `Link` or redirect elsewhere; the token realm is the one exception, as the registry
named it), pagination ends, reads are retried and writes are not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from metahub.client import http
from metahub.client.auth import fetch_token_body, pull_scope, push_scope
from metahub.client.credentials import BasicCredentials
from metahub.client.errors import RegistryHttpError, Trouble
from metahub.client.http import RegistryConnection
from metahub.client.retry import RetryPolicy
from metahub.host.login import LoginRefused, Server, verify
from tests.support.routed_server import Route, RoutedServer

BASIC = BasicCredentials("bot", "secret")
TAGS = "/v2/a/tags/list"


@pytest.fixture
async def registry() -> AsyncIterator[RoutedServer]:
    async with RoutedServer() as server:
        yield server


@pytest.fixture
async def other() -> AsyncIterator[RoutedServer]:
    """Another origin: same host, another port."""
    async with RoutedServer() as server:
        yield server


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str]] = []
        self.retries = 0

    def answered(self, method: str, outcome: str) -> None:
        self.outcomes.append((method, outcome))

    def retrying(self) -> None:
        self.retries += 1


def connect(server: RoutedServer, **options: object) -> RegistryConnection:
    return RegistryConnection(
        server.url,
        description=f"registry {server.url}",
        credentials=BASIC,
        retry=RetryPolicy(retries=2, base_delay=0.01, max_delay=0.05),
        **options,  # type: ignore[arg-type]
    )


def page(tags: list[str], link: str | None = None) -> Route:
    async def answer(_request: web.Request) -> web.StreamResponse:
        headers = {"Link": f'<{link}>; rel="next"'} if link else {}
        return web.json_response({"name": "a", "tags": tags}, headers=headers)

    return answer


def basic_only(route: Route) -> Route:
    async def answer(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != BASIC.header():
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "who are you"}]},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="test"'},
            )
        return await route(request)

    return answer


# -- Link pagination ------------------------------------------------------------------------------


async def test_a_link_to_another_origin_gets_no_authorization(
    registry: RoutedServer, other: RoutedServer
) -> None:
    registry.route(TAGS, basic_only(page(["a", "b"], f"{other.url}{TAGS}?last=b")))
    other.route(f"{TAGS}?last=b", page(["c"]))
    async with connect(registry) as connection:
        assert await connection.tags(TAGS) == ["a", "b", "c"]
    assert BASIC.header() in registry.authorizations(TAGS)
    assert other.authorizations() == [None]


async def test_a_link_on_the_registry_itself_carries_the_credentials(
    registry: RoutedServer,
) -> None:
    registry.route(TAGS, basic_only(page(["a"], f"{TAGS}?last=a")))
    registry.route(f"{TAGS}?last=a", basic_only(page(["b"])))
    async with connect(registry) as connection:
        assert await connection.tags(TAGS) == ["a", "b"]
    assert registry.authorizations(f"{TAGS}?last=a") == [BASIC.header()]


async def test_a_self_referencing_link_ends_with_an_error(registry: RoutedServer) -> None:
    registry.route(TAGS, page(["a"], TAGS))
    async with connect(registry) as connection:
        with pytest.raises(RegistryHttpError) as caught:
            await connection.tags(TAGS)
    assert caught.value.trouble is Trouble.PAGES
    assert "loops back" in str(caught.value) and registry.url in str(caught.value)
    assert registry.count(TAGS) == 1


async def test_links_that_loop_between_pages_end_with_an_error(registry: RoutedServer) -> None:
    registry.route(f"{TAGS}?last=a", page(["a"], f"{TAGS}?last=b"))
    registry.route(f"{TAGS}?last=b", page(["b"], f"{TAGS}?last=a"))
    async with connect(registry) as connection:
        with pytest.raises(RegistryHttpError) as caught:
            await connection.tags(f"{TAGS}?last=a")
    assert caught.value.trouble is Trouble.PAGES
    assert registry.count(f"{TAGS}?last=a") == 1 and registry.count(f"{TAGS}?last=b") == 1


async def test_pagination_stops_after_max_pages(
    registry: RoutedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "MAX_PAGES", 3)

    async def endless(request: web.Request) -> web.StreamResponse:
        last = int(request.query.get("last", "0"))
        return await page([str(last)], f"{TAGS}?last={last + 1}")(request)

    registry.route(TAGS, endless)
    async with connect(registry) as connection:
        with pytest.raises(RegistryHttpError) as caught:
            await connection.tags(TAGS)
    assert caught.value.trouble is Trouble.PAGES
    assert "more than 3 pages" in str(caught.value)
    assert len(registry.seen) == 3


async def test_pagination_stops_after_max_tags(
    registry: RoutedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "MAX_TAGS", 3)
    registry.route(TAGS, page(["a", "b"], f"{TAGS}?last=b"))
    registry.route(f"{TAGS}?last=b", page(["c", "d"], f"{TAGS}?last=d"))
    async with connect(registry) as connection:
        with pytest.raises(RegistryHttpError) as caught:
            await connection.tags(TAGS)
    assert "more than 3 tags" in str(caught.value)
    assert registry.count(f"{TAGS}?last=d") == 0


async def test_a_page_that_is_not_a_200_is_an_error_with_its_status(
    registry: RoutedServer,
) -> None:
    registry.answer(TAGS, 404, text='{"errors": [{"code": "NAME_UNKNOWN"}]}')
    async with connect(registry) as connection:
        with pytest.raises(RegistryHttpError) as caught:
            await connection.tags(TAGS)
    assert caught.value.trouble is Trouble.STATUS and caught.value.status == 404
    assert caught.value.detail == "NAME_UNKNOWN"


# -- redirects ---------------------------------------------------------------------------------


async def test_a_redirect_to_another_origin_gets_no_authorization_but_the_other_headers(
    registry: RoutedServer, other: RoutedServer
) -> None:
    async def redirect(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": f"{other.url}/storage/x"})

    registry.route("/v2/a/blobs/x", basic_only(redirect))
    other.answer("/storage/x", 206, body=b"by")
    async with connect(registry) as connection:
        response = await connection.request("GET", "/v2/a/blobs/x", headers={"Range": "bytes=0-1"})
        async with response:
            assert response.status == 206
            assert await response.read() == b"by"
    assert [seen.headers.get("Authorization") for seen in other.seen] == [None]
    assert other.seen[0].headers["Range"] == "bytes=0-1"


async def test_a_redirect_within_the_registry_keeps_the_credentials(
    registry: RoutedServer,
) -> None:
    async def redirect(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": "/storage/x"})

    async def blob(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"blob")

    registry.route("/v2/a/blobs/x", basic_only(redirect))
    registry.route("/storage/x", basic_only(blob))
    async with (
        connect(registry) as connection,
        await connection.request("GET", "/v2/a/blobs/x") as response,
    ):
        assert response.status == 200
    assert registry.authorizations("/storage/x") == [BASIC.header()]


async def test_redirects_end(registry: RoutedServer) -> None:
    async def around(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/v2/a/blobs/x"})

    registry.route("/v2/a/blobs/x", around)
    async with connect(registry) as connection:
        with pytest.raises(RegistryHttpError) as caught:
            await connection.request("GET", "/v2/a/blobs/x")
    assert caught.value.trouble is Trouble.REDIRECTS
    assert registry.count("/v2/a/blobs/x") == 1 + http.MAX_REDIRECTS


@pytest.mark.parametrize(
    ("registry_url", "url", "own"),
    [
        ("https://r.example", "https://r.example/v2/a/blobs/x", True),
        ("https://r.example", "http://r.example/v2/a/blobs/x", False),
        ("https://r.example", "https://r.example:8443/v2/", False),
        ("https://r.example", "https://cdn.example/x", False),
        ("http://127.0.0.1:5000/prefix", "http://127.0.0.1:5000/v2/", True),
    ],
)
def test_only_the_registry_s_own_origin_is_its_own(registry_url: str, url: str, own: bool) -> None:
    connection = RegistryConnection(registry_url, description="registry")
    assert connection.is_own(url) is own


# -- tokens --------------------------------------------------------------------------------------


def bearer_registry(registry: RoutedServer, other: RoutedServer) -> None:
    """`registry` wants a Bearer token from the realm on `other`, which wants Basic."""

    async def resource(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer tok":
            challenge = f'Bearer realm="{other.url}/token",service="reg"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return web.Response(body=b"{}")

    async def token(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != BASIC.header():
            return web.Response(status=401)
        return web.json_response({"token": "tok", "expires_in": 300})

    registry.route("/v2/a/manifests/t", resource)
    registry.route("/v2/a/blobs/uploads/", resource)
    other.route("/token", token)


async def test_the_token_realm_gets_the_credentials_and_only_the_registry_the_token(
    registry: RoutedServer, other: RoutedServer
) -> None:
    bearer_registry(registry, other)
    async with connect(registry) as connection:
        response = await connection.request("GET", "/v2/a/manifests/t", scopes=(pull_scope("a"),))
        async with response:
            assert response.status == 200
    assert registry.authorizations("/v2/a/manifests/t") == [None, "Bearer tok"]
    assert other.authorizations() == [BASIC.header()]
    assert "scope=repository:a:pull" in other.seen[0].path_qs


async def test_a_token_for_more_scopes_serves_a_request_that_needs_fewer(
    registry: RoutedServer, other: RoutedServer
) -> None:
    bearer_registry(registry, other)
    async with connect(registry) as connection:
        mount = (push_scope("a"), pull_scope("b"))
        async with await connection.request("POST", "/v2/a/blobs/uploads/", scopes=mount):
            pass
        async with await connection.request("GET", "/v2/a/manifests/t", scopes=mount[:1]):
            pass
    assert len(other.seen) == 1
    assert registry.authorizations("/v2/a/manifests/t") == ["Bearer tok"]


async def test_no_credentials_from_an_https_registry_to_a_plain_http_realm(
    other: RoutedServer,
) -> None:
    other.route("/token", page([]))  # any JSON: what matters is what arrived
    async with aiohttp.ClientSession() as session:
        await fetch_token_body(
            session,
            f"{other.url}/token",
            [("service", "reg")],
            BASIC,
            registry="https://registry.example",
            description="registry",
        )
    assert other.authorizations() == [None]


@pytest.mark.parametrize(
    ("status", "credentials", "trouble", "says"),
    [
        (
            401,
            BASIC,
            Trouble.TOKEN_REFUSED,
            "its token service {realm} refused the credentials (401)",
        ),
        (
            403,
            None,
            Trouble.TOKEN_REFUSED,
            "its token service {realm} refused an anonymous login (403)",
        ),
        (503, BASIC, Trouble.TOKEN_FAILED, "token service {realm} answered 503"),
    ],
)
async def test_a_token_service_that_gives_no_token_is_named_with_its_status(
    other: RoutedServer,
    status: int,
    credentials: BasicCredentials | None,
    trouble: Trouble,
    says: str,
) -> None:
    async def refuse(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Retry-After": "7"}, text="not today")

    other.route("/token", refuse)
    realm = f"{other.url}/token"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RegistryHttpError) as caught:
            await fetch_token_body(
                session, realm, [], credentials, registry=other.url, description="registry r"
            )
    assert caught.value.trouble is trouble
    assert caught.value.status == status
    assert caught.value.target == realm and caught.value.retry_after == "7"
    assert caught.value.message == "registry r: " + says.format(realm=realm)


async def test_a_401_that_cannot_be_met_is_unauthorized_with_the_registry_s_words(
    registry: RoutedServer,
) -> None:
    registry.route("/v2/a/manifests/t", basic_only(page([])))
    async with RegistryConnection(registry.url, description="registry r") as connection:
        with pytest.raises(RegistryHttpError) as caught:
            await connection.request("GET", "/v2/a/manifests/t")
    assert caught.value.trouble is Trouble.UNAUTHORIZED and caught.value.status == 401
    assert str(caught.value) == (
        "registry r refused GET /v2/a/manifests/t anonymously: UNAUTHORIZED: who are you"
    )


# -- retries -------------------------------------------------------------------------------------


def flaky(failures: int) -> Route:
    left = [failures]

    async def answer(_request: web.Request) -> web.StreamResponse:
        if left[0]:
            left[0] -= 1
            return web.Response(status=503, headers={"Retry-After": "0"})
        return web.Response(status=201 if _request.method == "POST" else 200)

    return answer


async def test_reads_are_retried_and_the_observer_sees_each_answer(
    registry: RoutedServer,
) -> None:
    registry.route("/v2/a/manifests/t", flaky(2))
    recorder = Recorder()
    async with (
        connect(registry, observer=recorder) as connection,
        await connection.request("GET", "/v2/a/manifests/t") as response,
    ):
        assert response.status == 200
    assert recorder.outcomes == [("GET", "503"), ("GET", "503"), ("GET", "200")]
    assert recorder.retries == 2


async def test_writes_are_never_retried(registry: RoutedServer) -> None:
    registry.route("/v2/a/blobs/uploads/", flaky(1))
    async with (
        connect(registry) as connection,
        await connection.request("POST", "/v2/a/blobs/uploads/") as response,
    ):
        assert response.status == 503
    assert registry.count("/v2/a/blobs/uploads/") == 1


async def test_an_unreachable_registry_is_named_with_the_plain_reason(
    registry: RoutedServer,
) -> None:
    url = registry.url
    await registry.__aexit__(None, None, None)  # nothing listens there any more
    recorder = Recorder()
    async with RegistryConnection(
        url,
        description=f"registry {url}",
        retry=RetryPolicy(retries=1, base_delay=0.01),
        observer=recorder,
    ) as connection:
        with pytest.raises(RegistryHttpError) as caught:
            await connection.request("GET", "/v2/")
    assert caught.value.trouble is Trouble.UNREACHABLE
    assert caught.value.detail == "Connection refused"
    assert str(caught.value).startswith(f"registry {url} is unreachable (GET /v2/)")
    assert recorder.outcomes == [("GET", "unreachable")] * 2


# -- metahub login -------------------------------------------------------------------------------


async def test_login_follows_a_redirect_to_another_origin_without_the_credentials(
    registry: RoutedServer, other: RoutedServer
) -> None:
    async def redirect(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": f"{other.url}/v2/"})

    registry.route("/v2/", basic_only(redirect))
    other.answer("/v2/", 401, text='{"errors": [{"message": "not here"}]}')
    server = Server(f"127.0.0.1:{registry.port}", (registry.url,))
    with pytest.raises(LoginRefused, match="not here"):
        await asyncio.to_thread(verify, server, BASIC.login, BASIC.password)
    assert BASIC.header() in registry.authorizations("/v2/")
    assert other.authorizations() == [None]
