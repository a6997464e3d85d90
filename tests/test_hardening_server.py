"""The server side against hostile clients: forwarded headers, a locked database, odd input.

Real `metahub serve` processes on loopback: one that trusts no proxy (the default), and one that
trusts loopback as its proxy. The database is locked the way another process would lock it,
with sqlite3 holding an exclusive transaction.
"""

from __future__ import annotations

import base64
import html
import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from metahub.config import parse_config
from metahub.server import registry
from metahub.server.app import MetaHubApp
from metahub.server.origin import PEER_KEY, behind_proxies, valid_host
from tests.support.metahub_server import MetaHubServer

MACHINE_TYPE = {"name": "cpu", "login": "cpu-login", "password": "pw", "features": ["cpu:zen2"]}
ADMIN, ADMIN_PASSWORD = "ops", "correct horse battery staple"
API_TOKEN = "api-token-for-hardening"
SPOOFED = {
    "x-forwarded-host": "evil.example",
    "x-forwarded-proto": "https",
    "forwarded": "for=192.0.2.1;host=evil2.example;proto=https",
}
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
COMMAND_RE = re.compile(r'<code id="docker-login"[^>]*>(.*?)</code>', re.S)
DIGEST = "sha256:" + "a" * 64


def config(tmp: Path, **extra: Any) -> dict[str, Any]:
    (tmp / "layout").mkdir(parents=True)
    return {
        "upstream": {"path": str(tmp / "layout")},
        "machine_types": [MACHINE_TYPE],
        "admin": {"tokens": [API_TOKEN]},
        "login_limit": {"failures": 100000},
        **extra,
    }


@pytest.fixture(scope="module")
def untrusted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaHubServer]:
    """Trusts no proxy; a short busy timeout, so a locked database is answered at once."""
    tmp = tmp_path_factory.mktemp("untrusted")
    with MetaHubServer(tmp, config(tmp, database={"busy_timeout": 0.2})) as hub:
        hub.create_admin(ADMIN, ADMIN_PASSWORD)
        yield hub


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaHubServer]:
    """Trusts loopback as its proxy, as behind an nginx on the same host."""
    tmp = tmp_path_factory.mktemp("trusted")
    proxies = {"trusted_proxies": ["127.0.0.0/8", "::1"]}
    with MetaHubServer(tmp, config(tmp, server=proxies)) as hub:
        hub.create_admin(ADMIN, ADMIN_PASSWORD)
        yield hub


def challenge(server: MetaHubServer, headers: dict[str, str]) -> str:
    response = httpx.get(f"{server.url}/v2/", headers=headers, timeout=30)
    assert response.status_code == 401
    return response.headers["www-authenticate"]


def realm(url: str) -> str:
    return f'Bearer realm="{url}/token",service="metahub"'


def api(server: MetaHubServer, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"authorization": f"Bearer {API_TOKEN}", **(headers or {})},
        timeout=60,
    )


def new_machine_type(server: MetaHubServer) -> str:
    name = f"mt-{uuid.uuid4().hex[:8]}"
    with api(server) as client:
        response = client.post("/machine-types", json={"name": name, "features": ["cpu:zen2"]})
    assert response.status_code == 201, response.text
    return name


@contextmanager
def signed_in(server: MetaHubServer, headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        page = client.get("/ui/sign-in")
        response = client.post(
            "/ui/sign-in",
            data={"login": ADMIN, "password": ADMIN_PASSWORD, "next": "/ui/", "csrf": csrf(page)},
        )
        assert response.status_code == 303, response.text
        yield client


def csrf(page: httpx.Response) -> str:
    found = CSRF_RE.search(page.text)
    assert found is not None, page.text
    return found.group(1)


def create_credential_page(client: httpx.Client, machine_type: str) -> httpx.Response:
    page = client.get(f"/ui/machine-types/{machine_type}")
    return client.post(
        f"/ui/machine-types/{machine_type}/credentials", data={"login": "", "csrf": csrf(page)}
    )


def docker_login_shown(server: MetaHubServer, headers: dict[str, str]) -> str:
    machine_type = new_machine_type(server)
    with signed_in(server, headers) as client:
        response = create_credential_page(client, machine_type)
    assert response.status_code == 201, response.text
    found = COMMAND_RE.search(response.text)
    assert found is not None
    return html.unescape(found.group(1))


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


# -- how the client reached the server --------------------------------------------------------


def test_forwarded_headers_from_an_untrusted_peer_are_not_the_token_realm(
    untrusted: MetaHubServer,
) -> None:
    assert challenge(untrusted, SPOOFED) == realm(untrusted.url)


@pytest.mark.parametrize(
    "host",
    ['evil.example"/x', "evil.example extra", "evil.example:99999", "[evil]:80", "evil_.example@"],
)
def test_an_invalid_host_header_never_appears(untrusted: MetaHubServer, host: str) -> None:
    value = challenge(untrusted, {"host": host})
    assert "evil" not in value
    assert value == realm(f"http://127.0.0.1:{untrusted.port}")


def test_forwarded_headers_from_a_trusted_proxy_are_the_token_realm(
    trusted: MetaHubServer,
) -> None:
    headers = {"x-forwarded-host": "registry.example:8443", "x-forwarded-proto": "https"}
    assert challenge(trusted, headers) == realm("https://registry.example:8443")
    forwarded = {"forwarded": 'for=192.0.2.1;host="fwd.example";proto=https'}
    assert challenge(trusted, forwarded) == realm("https://fwd.example")
    # Even a trusted proxy's word is checked: a host that is not one falls back to `Host`.
    assert challenge(trusted, {"x-forwarded-host": 'evil.example"x'}) == realm(trusted.url)


def test_the_ui_docker_login_hint_ignores_an_untrusted_forwarded_host(
    untrusted: MetaHubServer,
) -> None:
    command = docker_login_shown(untrusted, SPOOFED)
    assert "evil" not in command
    assert command.endswith(f" --password-stdin {untrusted.host}")


def test_the_ui_docker_login_hint_takes_a_trusted_forwarded_host_shell_quoted(
    trusted: MetaHubServer,
) -> None:
    command = docker_login_shown(trusted, {"x-forwarded-host": "registry.example:8443"})
    assert command.endswith(" --password-stdin registry.example:8443")
    command = docker_login_shown(trusted, {"x-forwarded-host": "[2001:db8::1]:5000"})
    assert command.endswith(" --password-stdin '[2001:db8::1]:5000'")


def test_the_api_docker_login_hint_ignores_an_untrusted_forwarded_host(
    untrusted: MetaHubServer, trusted: MetaHubServer
) -> None:
    for server, expected in ((untrusted, untrusted.host), (trusted, "registry.example")):
        machine_type = new_machine_type(server)
        with api(server, {"x-forwarded-host": "registry.example"}) as client:
            issued = client.post(f"/machine-types/{machine_type}/credentials", json={}).json()
        assert issued["docker_login"].endswith(f" --password-stdin {expected}")


def secure_cookie(server: MetaHubServer) -> bool:
    response = httpx.get(f"{server.url}/ui/sign-in", headers={"x-forwarded-proto": "https"})
    return "secure" in [p.strip().lower() for p in response.headers["set-cookie"].split(";")]


def test_secure_cookie_only_behind_a_trusted_https_proxy(
    untrusted: MetaHubServer, trusted: MetaHubServer
) -> None:
    assert not secure_cookie(untrusted)
    assert secure_cookie(trusted)


def test_the_access_log_names_the_client_a_trusted_proxy_forwarded(
    untrusted: MetaHubServer, trusted: MetaHubServer
) -> None:
    for server in (untrusted, trusted):
        httpx.get(f"{server.url}/healthz", headers={"x-forwarded-for": "203.0.113.7"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (
        '203.0.113.7 "GET /healthz"' in trusted.log() and '"GET /healthz"' in untrusted.log()
    ):
        time.sleep(0.05)
    assert '203.0.113.7 "GET /healthz"' in trusted.log()
    assert '127.0.0.1 "GET /healthz"' in untrusted.log()
    assert "203.0.113.7" not in untrusted.log()


def test_valid_hosts() -> None:
    for host in ("example.org", "a-b.example.org:443", "127.0.0.1:5000", "[::1]", "[::1]:80"):
        assert valid_host(host), host
    for host in (
        "",
        "a b",
        "a:0",
        "a:65536",
        "a:1:2",
        "[::1",
        "[x]",
        "-a.example",
        "a/b",
        "ä",
        "a\n",
        "a:1\n",
    ):
        assert not valid_host(host), host


def test_the_client_behind_a_trusted_proxy_is_the_one_it_forwarded() -> None:
    scope = {
        "type": "http",
        "client": ("10.0.0.2", 4000),
        "headers": [(b"x-forwarded-for", b"203.0.113.9, 198.51.100.7, 10.0.0.1")],
    }
    trusted = ("10.0.0.0/8",)
    forwarded = behind_proxies(scope, trusted)
    # The nearest address that is not a trusted proxy: the ones before it could be made up.
    assert forwarded["client"] == ("198.51.100.7", 4000)
    assert forwarded[PEER_KEY] == "10.0.0.2"
    untrusted_peer = {**scope, "client": ("192.0.2.5", 4000)}
    assert behind_proxies(untrusted_peer, trusted) is untrusted_peer


# -- a database that does not answer ----------------------------------------------------------


@contextmanager
def locked(server: MetaHubServer) -> Iterator[None]:
    """The database held by another process's exclusive transaction, briefly."""
    connection = sqlite3.connect(server.tmp / "data" / "metahub.db", isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def test_a_locked_database_is_a_503_on_the_management_api(untrusted: MetaHubServer) -> None:
    with locked(untrusted), api(untrusted) as client:
        response = client.post("/machine-types", json={"name": "locked", "features": []})
    assert response.status_code == 503
    (error,) = response.json()["errors"]
    assert error["code"] == "UNAVAILABLE"
    assert "SQLite" in error["message"] and "metahub.db" in error["message"]
    log = untrusted.log()
    assert "POST /api/v1/machine-types: MetaHub's database" in log
    assert "database is locked" in log
    assert "Traceback" not in log


def test_a_locked_database_is_an_error_page_in_the_ui(untrusted: MetaHubServer) -> None:
    machine_type = new_machine_type(untrusted)
    with signed_in(untrusted, {}) as client:
        page = client.get(f"/ui/machine-types/{machine_type}")
        with locked(untrusted):
            response = client.post(
                f"/ui/machine-types/{machine_type}/credentials",
                data={"login": "", "csrf": csrf(page)},
            )
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert "did not answer" in response.text
    assert "Traceback" not in untrusted.log()


# -- registry error bodies for whatever a client sends ----------------------------------------


def assert_registry_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["errors"][0]["code"] == code


def test_a_wrong_method_or_path_outside_the_apis_is_a_registry_error(
    untrusted: MetaHubServer,
) -> None:
    refused = httpx.post(f"{untrusted.url}/healthz")
    assert_registry_error(refused, 405, "UNSUPPORTED")
    assert {m.strip() for m in refused.headers["allow"].split(",")} == {"GET", "HEAD"}
    assert_registry_error(httpx.get(f"{untrusted.url}/nowhere"), 404, "NOT_FOUND")


AUTH = {"authorization": basic(MACHINE_TYPE["login"], MACHINE_TYPE["password"])}


@pytest.mark.parametrize(
    ("path", "params", "headers", "status", "code"),
    [
        ("/v2/cpu/tags/list", {"n": "²"}, AUTH, 400, "PAGINATION_NUMBER_INVALID"),
        ("/v2/cpu/tags/list", {"n": "5\n"}, AUTH, 400, "PAGINATION_NUMBER_INVALID"),
        ("/v2/cpu/tags/list", {"n": "9" * 5000}, AUTH, 404, "NAME_UNKNOWN"),
        ("/v2/cpu/tags/list", {"n": "1", "last": "\udcff\x00"}, AUTH, 404, "NAME_UNKNOWN"),
        (
            f"/v2/cpu/referrers/{DIGEST}",
            {"artifactType": "\x00\n" + "a" * 9000},
            AUTH,
            404,
            "NAME_UNKNOWN",
        ),
        ("/v2/cpu/blobs/" + DIGEST, {}, {**AUTH, "range": "bytes=" + "9" * 5000 + "-"}, 404, ""),
        ("/token", {"scope": "repository:::\x00:pull", "service": "\udcff"}, AUTH, 200, ""),
        ("/v2/", {}, {"authorization": b"Basic \xe9\xe9\xff"}, 401, "UNAUTHORIZED"),
        ("/token", {}, {"authorization": b"Basic \xe9\xe9\xff"}, 401, "UNAUTHORIZED"),
        ("/v2/", {}, {"authorization": "Bearer " + "a" * 60000}, 401, "UNAUTHORIZED"),
        (
            "/v2/",
            {},
            {"authorization": "Basic " + base64.b64encode(b"\xff:\xfe").decode()},
            401,
            "UNAUTHORIZED",
        ),
        ("/v2/%FF%FE/manifests/latest", {}, AUTH, 400, "NAME_INVALID"),
        ("/v2/cpu/manifests/%FF", {}, AUTH, 400, "TAG_INVALID"),
    ],
)
def test_odd_input_is_a_client_error_with_a_registry_body(
    untrusted: MetaHubServer,
    path: str,
    params: dict[str, str],
    headers: dict[str, Any],
    status: int,
    code: str,
) -> None:
    query = urlencode({k: v.encode("utf-8", "surrogateescape") for k, v in params.items()})
    url = f"{untrusted.url}{path}" + (f"?{query}" if query else "")
    response = httpx.get(url, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    if code:
        assert_registry_error(response, status, code)


# -- the Accept cache -------------------------------------------------------------------------


def test_distinct_large_accept_headers_leave_the_cache_small() -> None:
    index = "application/vnd.oci.image.index.v1+json"
    for number in range(1000):
        accept = f"{index}, application/x-{number}-" + "x" * 8192
        assert registry._accepts_index(accept)
        assert not registry._accepts_index(f"application/x-{number}")
    stored = sum(len(key or "") for key in registry._ACCEPT_ANSWERS)
    assert len(registry._ACCEPT_ANSWERS) <= registry.ACCEPT_CACHE_ENTRIES
    assert stored <= registry.ACCEPT_CACHE_ENTRIES * registry.ACCEPT_CACHE_KEY_LIMIT


def test_distinct_long_manifest_paths_leave_the_path_cache_small() -> None:
    for number in range(3000):
        path = f"/v2/team/app{number}/manifests/" + "t" * 100
        assert registry._manifest_path(path) == (f"team/app{number}", "t" * 100)
        long_path = f"/v2/team/{'a' * 600}{number}/manifests/latest"  # a name too long
        assert registry._manifest_path(long_path) is None
    stored = sum(len(key) for key in registry._MANIFEST_PATHS)
    assert len(registry._MANIFEST_PATHS) <= registry.MANIFEST_PATH_ENTRIES
    assert stored <= registry.MANIFEST_PATH_ENTRIES * registry.MANIFEST_PATH_KEY_LIMIT


@pytest.mark.parametrize(
    "path",
    [
        "/v2/UPPER/manifests/latest",  # an invalid name
        "/v2/team/app/manifests/-bad",  # an invalid tag
        "/v2/team/app/manifests/sha256:short",  # an invalid digest
        "/v2/team/app/blobs/latest",  # not a manifest
        "/v2/team/app/tags/list",
    ],
)
def test_a_path_the_warm_shortcut_cannot_take_is_refused_every_time(path: str) -> None:
    # Twice: the second answer comes from the cache and must be the same refusal.
    assert registry._manifest_path(path) is None
    assert registry._manifest_path(path) is None


class _LockedCredentials:
    async def check_account(self, login: str, password: str) -> None:
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))


class _Limiter:
    def check(self, address: str) -> None:
        pass

    def failed(self, address: str) -> None:
        pass


async def test_a_database_error_on_the_registry_side_is_a_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The registry's own catch-all, reached in process: no request there waits on a lock."""
    settings = parse_config({"upstream": {"path": str(tmp_path)}})
    app = MetaHubApp(settings)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'metahub.db'}")
    hub = SimpleNamespace(
        settings=settings,
        engine=engine,
        credentials=_LockedCredentials(),
        login_failures=_Limiter(),
    )
    app._hub = hub  # type: ignore[assignment]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v2/",
        "query_string": b"",
        "headers": [(b"authorization", basic("cpu-login", "pw").encode())],
        "client": ("127.0.0.1", 1),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.WARNING, logger="metahub.server"):
        await app(scope, receive, send)
    await engine.dispose()
    assert sent[0]["status"] == 503
    (error,) = orjson.loads(sent[1]["body"])["errors"]
    assert error["code"] == "UNAVAILABLE" and "SQLite" in error["message"]
    (record,) = caplog.records
    assert "database is locked" in record.getMessage() and record.exc_info is None
