"""MetaHub authenticates to its upstream the way the upstream asks: Bearer tokens or Basic.

The upstream is a small real registry on loopback written here: it speaks the Docker token
protocol (a 401 with a Bearer challenge, a token service that checks Basic credentials, `scope`
and `service`, and tokens that expire) or, in its other mode, plain Basic authentication. It
serves one hand-written index, manifest and blob whose digests are computed here with hashlib.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from metahub.client.auth import TOKEN_EXPIRY_MARGIN
from tests.support.inprocess import InProcessHub
from tests.support.oci import OCI_INDEX, OCI_MANIFEST, sha256

SERVICE = "fake-registry"
UPSTREAM_USER = "mirror-bot"
UPSTREAM_PASSWORD = "upstream-secret"
LOGIN = ("node", "node-pw")
MACHINE_TYPES = [
    {"name": "node", "login": LOGIN[0], "password": LOGIN[1], "features": ["cpu:haswell"]}
]


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


BLOB = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(1000))
CONFIG = json.dumps(
    {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
).encode()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", CONFIG),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", BLOB)],
    },
    indent=1,
).encode()
INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            descriptor(OCI_MANIFEST, MANIFEST, platform={"architecture": "amd64", "os": "linux"})
        ],
    },
    indent=2,
).encode()
MANIFESTS = {"latest": (INDEX, OCI_INDEX), sha256(INDEX): (INDEX, OCI_INDEX)}
MANIFESTS[sha256(MANIFEST)] = (MANIFEST, OCI_MANIFEST)
BLOBS = {sha256(BLOB): BLOB, sha256(CONFIG): CONFIG}
_ROUTE = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]+)$")
_SCOPE = re.compile(r"^repository:(?P<name>[a-z0-9/._-]+):pull$")


@dataclass
class TokenRequest:
    scope: str | None
    service: str | None
    credentials_ok: bool


@dataclass
class FakeRegistry:
    """The upstream's state; `challenge` is "bearer" (token protocol) or "basic"."""

    challenge: str
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> scope, expiry
    token_requests: list[TokenRequest] = field(default_factory=list)
    challenged: Counter[str] = field(default_factory=Counter)  # repository -> 401s sent
    served: Counter[str] = field(default_factory=Counter)  # repository -> 200s sent
    authorizations: list[tuple[str, str]] = field(default_factory=list)  # repository, header
    expires_in: dict[str, int] = field(default_factory=dict)  # repository -> token lifetime

    def token_count(self, name: str) -> int:
        with self.lock:
            return sum(1 for r in self.token_requests if r.scope == f"repository:{name}:pull")

    def revoke(self, name: str) -> None:
        with self.lock:
            scope = f"repository:{name}:pull"
            self.tokens = {t: v for t, v in self.tokens.items() if v[0] != scope}


class FakeRegistryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, registry: FakeRegistry) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.registry = registry
        registry.url = f"http://127.0.0.1:{self.server_address[1]}"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Handler(BaseHTTPRequestHandler):
    server: FakeRegistryServer

    def do_GET(self) -> None:
        registry = self.server.registry
        parts = urlsplit(self.path)
        if parts.path == "/token" and registry.challenge == "bearer":
            self._token(registry, parse_qs(parts.query))
            return
        match = _ROUTE.match(parts.path)
        if match is None:
            self._json(404, {"errors": [{"code": "NOT_FOUND", "message": parts.path}]})
            return
        name, kind, ref = match.group("name", "kind", "ref")
        authorization = self.headers.get("Authorization", "")
        with registry.lock:
            registry.authorizations.append((name, authorization))
            allowed = self._allowed(registry, name, authorization)
            registry.challenged[name] += not allowed
            registry.served[name] += allowed
        if not allowed:
            self._challenge(registry, name)
        elif not name.startswith("team/"):
            self._json(404, {"errors": [{"code": "NAME_UNKNOWN", "message": name}]})
        elif kind == "tags":
            self._json(200, {"name": name, "tags": ["latest"]})
        elif kind == "manifests" and ref in MANIFESTS:
            data, media_type = MANIFESTS[ref]
            self._send(200, data, media_type)
        elif kind == "blobs" and ref in BLOBS:
            self._send(200, BLOBS[ref], "application/octet-stream")
        else:
            code = "MANIFEST_UNKNOWN" if kind == "manifests" else "BLOB_UNKNOWN"
            self._json(404, {"errors": [{"code": code, "message": ref}]})

    do_HEAD = do_GET

    def _allowed(self, registry: FakeRegistry, name: str, authorization: str) -> bool:
        if registry.challenge == "basic":
            return authorization == basic(UPSTREAM_USER, UPSTREAM_PASSWORD)
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or token not in registry.tokens:
            return False
        scope, expiry = registry.tokens[token]
        return scope == f"repository:{name}:pull" and time.monotonic() < expiry

    def _challenge(self, registry: FakeRegistry, name: str) -> None:
        if registry.challenge == "basic":
            value = 'Basic realm="x"'
        else:
            value = (
                f'Bearer realm="{registry.url}/token",service="{SERVICE}",'
                f'scope="repository:{name}:pull"'
            )
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        self._json(401, body, {"WWW-Authenticate": value})

    def _token(self, registry: FakeRegistry, query: dict[str, list[str]]) -> None:
        scope = query.get("scope", [None])[0]
        service = query.get("service", [None])[0]
        credentials_ok = self.headers.get("Authorization") == basic(
            UPSTREAM_USER, UPSTREAM_PASSWORD
        )
        with registry.lock:
            registry.token_requests.append(TokenRequest(scope, service, credentials_ok))
        match = _SCOPE.match(scope or "")
        if not credentials_ok:
            self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
        elif service != SERVICE or match is None or len(query.get("scope", [])) != 1:
            self._json(400, {"errors": [{"code": "DENIED", "message": f"{service} {scope}"}]})
        else:
            lifetime = registry.expires_in.get(match.group("name"), 300)
            token = secrets.token_urlsafe(24)
            with registry.lock:
                registry.tokens[token] = (str(scope), time.monotonic() + lifetime)
            self._json(200, {"token": token, "expires_in": lifetime, "issued_at": "2024-01-01"})

    def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(
        self, status: int, body: bytes, media_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Content-Digest", sha256(body))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def fake_registry(challenge: str) -> Iterator[FakeRegistry]:
    registry = FakeRegistry(challenge)
    server = FakeRegistryServer(registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Setup:
    bearer: FakeRegistry
    basic: FakeRegistry
    hub: InProcessHub  # right credentials, token upstream
    refused: InProcessHub  # wrong password, token upstream
    basic_hub: InProcessHub  # right credentials, Basic upstream
    basic_refused: InProcessHub  # wrong password, Basic upstream


def hub_for(tmp: Path, upstream: FakeRegistry, password: str) -> InProcessHub:
    config = {
        "upstream": {"url": upstream.url, "username": UPSTREAM_USER, "password": password},
        "machine_types": MACHINE_TYPES,
    }
    return InProcessHub(tmp, config)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("token-auth")
    with (
        fake_registry("bearer") as bearer,
        fake_registry("basic") as basic_upstream,
        contextlib.ExitStack() as stack,
    ):
        found = Setup(
            bearer,
            basic_upstream,
            hub_for(tmp / "hub", bearer, UPSTREAM_PASSWORD),
            hub_for(tmp / "refused", bearer, "wrong-password"),
            hub_for(tmp / "basic-hub", basic_upstream, UPSTREAM_PASSWORD),
            hub_for(tmp / "basic-refused", basic_upstream, "wrong-password"),
        )
        for hub in [found.hub, found.refused, found.basic_hub, found.basic_refused]:
            stack.enter_context(hub)
        yield found


@pytest.fixture(scope="module")
def client(setup: Setup) -> Iterator[httpx.Client]:
    with setup.hub.client(auth=LOGIN) as http:
        yield http


def error(response: httpx.Response) -> dict[str, Any]:
    return response.json()["errors"][0]  # type: ignore[no-any-return]


def pull(client: httpx.Client, name: str) -> None:
    """Everything a runtime asks for when it pulls `name`, each answer checked."""
    index = client.get(f"/v2/{name}/manifests/latest")
    assert index.status_code == 200, index.text
    assert index.content == INDEX
    assert index.headers["docker-content-digest"] == sha256(INDEX)
    assert index.headers["content-type"] == OCI_INDEX
    manifest = client.get(f"/v2/{name}/manifests/{sha256(MANIFEST)}")
    assert manifest.status_code == 200, manifest.text
    assert manifest.content == MANIFEST
    assert manifest.headers["content-type"] == OCI_MANIFEST
    config = client.get(f"/v2/{name}/blobs/{sha256(CONFIG)}")
    assert config.content == CONFIG
    blob = client.get(f"/v2/{name}/blobs/{sha256(BLOB)}")
    assert blob.status_code == 200
    assert blob.content == BLOB
    assert blob.headers["docker-content-digest"] == sha256(BLOB)


# -- Bearer tokens --------------------------------------------------------------------------------


def test_token_upstream_serves_manifests_and_blobs(client: httpx.Client, setup: Setup):
    pull(client, "team/app")
    head = client.head(f"/v2/team/app/blobs/{sha256(BLOB)}")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(BLOB))
    tags = client.get("/v2/team/app/tags/list")
    assert tags.json() == {"name": "team/app", "tags": ["latest"]}
    asked = [r for r in setup.bearer.token_requests if r.scope == "repository:team/app:pull"]
    assert asked == [TokenRequest("repository:team/app:pull", SERVICE, True)]
    assert setup.bearer.served["team/app"] >= 6


def test_a_token_is_fetched_once_per_scope_and_reused(client: httpx.Client, setup: Setup):
    for _ in range(4):
        pull(client, "team/cached")
    for _ in range(3):
        assert client.head("/v2/team/cached/manifests/latest").status_code == 200
    assert client.get("/v2/team/cached/tags/list").status_code == 200
    assert setup.bearer.token_count("team/cached") == 1
    # Only the very first request went out without a token; every later one carried it.
    assert setup.bearer.challenged["team/cached"] == 1


def test_another_repository_gets_its_own_token(client: httpx.Client, setup: Setup):
    pull(client, "team/one")
    pull(client, "team/two")
    pull(client, "team/one")
    pull(client, "team/two")
    assert setup.bearer.token_count("team/one") == 1
    assert setup.bearer.token_count("team/two") == 1
    scopes = {scope for scope, _ in setup.bearer.tokens.values()}
    assert {"repository:team/one:pull", "repository:team/two:pull"} <= scopes


def test_an_expiring_token_is_replaced_before_it_expires(client: httpx.Client, setup: Setup):
    # MetaHub drops a token TOKEN_EXPIRY_MARGIN seconds before the upstream would: with this
    # lifetime it keeps it for about a second, while the upstream still accepts it for 11 s.
    kept = 1.0
    setup.bearer.expires_in["team/expiring"] = int(TOKEN_EXPIRY_MARGIN + kept)
    started = time.monotonic()
    pull(client, "team/expiring")
    pull(client, "team/expiring")
    assert time.monotonic() - started < kept, "too slow to see the token reused"
    assert setup.bearer.token_count("team/expiring") == 1
    time.sleep(max(0.0, started + kept + 0.2 - time.monotonic()))
    pull(client, "team/expiring")
    assert setup.bearer.token_count("team/expiring") == 2


def test_a_token_the_upstream_stops_accepting_is_replaced(client: httpx.Client, setup: Setup):
    pull(client, "team/revoked")
    setup.bearer.revoke("team/revoked")
    pull(client, "team/revoked")
    assert setup.bearer.token_count("team/revoked") == 2


def test_wrong_upstream_credentials_are_a_502_naming_the_upstream(setup: Setup):
    with setup.refused.client(auth=LOGIN) as http:
        for path in ("/v2/team/refused/manifests/latest", f"/v2/team/refused/blobs/{sha256(BLOB)}"):
            response = http.get(path)
            assert response.status_code == 502, response.text
            assert error(response)["code"] == "UPSTREAM_ERROR"
            assert setup.bearer.url in error(response)["message"]
    refused = [r for r in setup.bearer.token_requests if r.scope == "repository:team/refused:pull"]
    assert refused
    assert not any(r.credentials_ok for r in refused)
    assert setup.bearer.served["team/refused"] == 0


# -- Basic --------------------------------------------------------------------------------------


def test_basic_challenge_gets_basic_credentials(setup: Setup):
    with setup.basic_hub.client(auth=LOGIN) as http:
        pull(http, "team/app")
        pull(http, "team/other")
    assert setup.basic.token_requests == []
    # One challenge taught MetaHub the scheme; from then on the credentials went along.
    assert setup.basic.challenged["team/app"] + setup.basic.challenged["team/other"] == 1
    assert setup.basic.served["team/app"] == setup.basic.served["team/other"] == 4
    sent = [a for name, a in setup.basic.authorizations if name in ("team/app", "team/other")]
    assert sent[0] == ""
    assert set(sent[1:]) == {basic(UPSTREAM_USER, UPSTREAM_PASSWORD)}


def test_wrong_basic_credentials_are_a_502_naming_the_upstream(setup: Setup):
    with setup.basic_refused.client(auth=LOGIN) as http:
        for _ in range(2):  # the first refusal teaches MetaHub the scheme; the second is known
            response = http.get("/v2/team/refused/manifests/latest")
            assert response.status_code == 502, response.text
            assert error(response)["code"] == "UPSTREAM_ERROR"
            assert setup.basic.url in error(response)["message"]
    assert setup.basic.served["team/refused"] == 0
