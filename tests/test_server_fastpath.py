"""The warm path's shortcut: a manifest answered from memory in the HTTP protocol layer.

A real uvicorn server with MetaHub's protocol runs in a thread of the test, over an OCI layout;
the test can turn the shortcut off and on between two requests of one connection, so the same
request is answered once by the shortcut and once by the ASGI app, and the two answers compared
byte for byte (the `date` header aside). The shortcut must also honour what changes between
requests: a token that expires, a credential revoked, a machine type given new features.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import http.client
import json
import logging
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TypeVar

import jwt.api_jwt
import pytest
import uvicorn

from metahub.auth import tokens
from metahub.cli.serve import uvicorn_options
from metahub.config import parse_config
from metahub.hub import Hub
from metahub.oci.layout_writer import LayoutWriter
from metahub.server.accesslog import LOGGER_NAME
from metahub.server.app import MetaHubApp, build_app
from metahub.server.http import header_fields
from metahub.server.protocol import MetaHubHttpProtocol
from tests.support.oci import AMD64, ARM64, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, sha256
from tests.support.servers import free_port

T = TypeVar("T")
REPOSITORY = "hpc/app"
# docker 20.10's Accept lines for a manifest GET, one per type (as benchmarks/serving.py).
DOCKER_ACCEPT = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
    OCI_MANIFEST,
)
BUILDS = {
    "haswell": (AMD64, ["cpu:haswell"]),
    "skylake": (AMD64, ["cpu:skylake"]),
    "generic": (AMD64, []),
    "arm64": (ARM64, []),
}


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An index of a haswell, a skylake and a generic amd64 build and an arm64 one."""
    path = tmp_path_factory.mktemp("fastpath-layout")
    writer = LayoutWriter(path)
    descriptors: dict[str, Any] = {"path": path}
    for label, (platform, features) in BUILDS.items():
        config = writer.add_json({**platform, "label": label}, OCI_CONFIG)
        document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}
        descriptor = writer.add_json(document, OCI_MANIFEST)
        full_platform = {**platform, "features": features} if features else dict(platform)
        descriptors[label] = {**descriptor, "platform": full_platform}
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptors[label] for label in BUILDS],
    }
    writer.tag(f"{REPOSITORY}:latest", writer.add_json(index, OCI_INDEX))
    writer.save()
    return descriptors


class ThreadedServer:
    """uvicorn with MetaHub's app and protocol (as `metahub serve` runs it) in a thread."""

    def __init__(self, tmp: Path, layout: Path, *, keep_alive: float = 5.0) -> None:
        self.settings = parse_config(
            {
                "upstream": {"path": str(layout)},
                "data_dir": str(tmp / "data"),
                "machine_types": [
                    {"name": "sky", "login": "sky", "password": "pw", "features": ["cpu:skylake"]}
                ],
            }
        )
        self.observe = build_app(self.settings)
        self.port = free_port()
        config = uvicorn.Config(
            self.observe,
            host="127.0.0.1",
            port=self.port,
            **uvicorn_options(self.settings, loop="none", log_level="warning"),
            timeout_keep_alive=keep_alive,
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True
        )
        # What the shortcut answered (paths), and the access log's lines.
        self.answered: list[str] = []
        self.logged: list[str] = []

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        original = self.observe.answer_from_memory

        def spied(scope: dict[str, Any], render: Any) -> bytes | None:
            data = original(scope, render)
            if data is not None:
                self.answered.append(scope["path"])
            return data

        self.observe.answer_from_memory = spied  # type: ignore[method-assign]
        self.observe.access.write = self.logged.append  # type: ignore[method-assign]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.loop.close()

    @property
    def hub(self) -> Hub:
        app = self.observe.app
        assert isinstance(app, MetaHubApp)
        return app.hub

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine in the server's own event loop (the hub lives there)."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(30)


@pytest.fixture
def server(tmp_path: Path, layout: dict[str, Any]) -> Iterator[ThreadedServer]:
    access = logging.getLogger(LOGGER_NAME)
    level = access.level
    access.setLevel(logging.INFO)
    running = ThreadedServer(tmp_path, layout["path"])
    running.start()
    yield running
    running.stop()
    access.setLevel(level)


class Client:
    """One kept-alive connection sending docker's requests with a Bearer token."""

    def __init__(self, server: ThreadedServer, login: str, password: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.token = self.token_for(login, password)

    def token_for(self, login: str, password: str) -> str:
        basic = base64.b64encode(f"{login}:{password}".encode()).decode()
        status, _, body = self.request(
            "GET",
            f"/token?service=metahub&scope=repository:{REPOSITORY}:pull",
            [("Authorization", f"Basic {basic}")],
        )
        assert status == 200, body
        token: str = json.loads(body)["token"]
        return token

    def request(
        self, method: str, path: str, headers: list[tuple[str, str]]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        self.connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            self.connection.putheader(name, value)
        self.connection.endheaders()
        response = self.connection.getresponse()
        body = response.read()
        return response.status, response.getheaders(), body

    def manifest(
        self, method: str, reference: str, *, accept: tuple[str, ...] = DOCKER_ACCEPT
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [("Authorization", f"Bearer {self.token}")]
        headers += [("Accept", value) for value in accept]
        return self.request(method, f"/v2/{REPOSITORY}/manifests/{reference}", headers)


def without_date(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() != "date"]


def chosen(body: bytes) -> list[str]:
    return [entry["digest"] for entry in json.loads(body)["manifests"]]


def test_a_warm_manifest_is_answered_from_memory_exactly_as_the_app_answers_it(
    server: ThreadedServer, layout: dict[str, Any]
) -> None:
    client = Client(server, "sky", "pw")
    status, _, index = client.manifest("GET", "latest")  # cold: filtered and stored
    assert status == 200
    assert chosen(index) == [layout["skylake"]["digest"], layout["arm64"]["digest"]]
    references = ["latest", sha256(index), layout["skylake"]["digest"]]
    for reference in references:
        assert client.manifest("GET", reference)[0] == 200  # in memory from now on
        for method in ("GET", "HEAD"):
            server.answered.clear()
            server.observe.fast_path = True
            fast = client.manifest(method, reference)
            assert server.answered == [f"/v2/{REPOSITORY}/manifests/{reference}"], method
            server.observe.fast_path = False
            slow = client.manifest(method, reference)
            assert server.answered == [f"/v2/{REPOSITORY}/manifests/{reference}"]
            assert (fast[0], without_date(fast[1]), fast[2]) == (
                slow[0],
                without_date(slow[1]),
                slow[2],
            ), f"{method} {reference}"
            headers = dict((name.lower(), value) for name, value in fast[1])
            assert "date" in headers
            if method == "GET":
                assert headers["docker-content-digest"] == sha256(fast[2])
                assert int(headers["content-length"]) == len(fast[2])
            else:
                assert fast[2] == b""
    server.observe.fast_path = True
    # Repeated bytes were answered without parsing them again: each GET and HEAD is known.
    known = [data for data in MetaHubHttpProtocol._known if b"/manifests/" in data]
    for data in known:  # each with its header fields made once, as a request would read them
        request = MetaHubHttpProtocol._known[data]
        assert request.fields == header_fields(request.headers)
        assert request.fields["authorization"].startswith("Bearer ")
    assert {data.split(b" ", 2)[1].decode() for data in known} >= {
        f"/v2/{REPOSITORY}/manifests/{reference}" for reference in references
    }
    # The access log has a line for each, fast or not, in the same shape.
    lines = [line for line in server.logged if "/manifests/" in line]
    assert len(lines) == 1 + (1 + 2 * 2) * len(references)
    shapes = {line.split('"')[2].split()[0:2][0] for line in lines}
    assert shapes == {"200"}


def test_the_shortcut_dates_each_answer_by_the_clock_though_it_writes_it_from_memory(
    server: ThreadedServer,
) -> None:
    """The shortcut writes a warm answer once and sends those bytes again; the `date` header
    must still move on with the clock, as it does on the ASGI path."""
    client = Client(server, "sky", "pw")
    client.manifest("GET", "latest")
    dates = []
    for _ in range(3):
        before = int(time.time())
        server.answered.clear()
        status, headers, _ = client.manifest("GET", "latest")
        after = int(time.time())
        assert status == 200 and server.answered == [f"/v2/{REPOSITORY}/manifests/latest"]
        date = dict((name.lower(), value) for name, value in headers)["date"]
        sent = int(email.utils.parsedate_to_datetime(date).timestamp())
        assert before - 1 <= sent <= after, (date, before, after)  # uvicorn ticks each second
        dates.append(date)
        time.sleep(1.2)
    assert len(set(dates)) == 3


def test_the_shortcut_counts_each_answer_in_the_metrics(
    server: ThreadedServer, layout: dict[str, Any]
) -> None:
    client = Client(server, "sky", "pw")
    client.manifest("GET", "latest")
    # Every count a warm pull makes, as the full path makes them: the request, the tag and the
    # filtered index found in memory, and the pull by machine type.
    series = {
        "requests": ("metahub_http_requests_total", 'route="manifest"', 'method="GET"'),
        "tag hits": ("metahub_cache_requests_total", 'cache="tag"', 'result="hit"'),
        "filtered hits": ("metahub_cache_requests_total", 'cache="filtered"', 'result="hit"'),
        "pulls": ("metahub_manifest_pulls_total", 'machine_type="', 'outcome="'),
    }

    def counts() -> dict[str, float]:
        status, _, body = client.request("GET", "/metrics", [])
        assert status == 200
        found = dict.fromkeys(series, 0.0)
        for line in body.decode().splitlines():
            for what, (name, *labels) in series.items():
                if line.startswith(name + "{") and all(label in line for label in labels):
                    found[what] += float(line.rsplit(" ", 1)[1])
        return found

    before = counts()
    server.answered.clear()
    for _ in range(3):
        assert client.manifest("GET", "latest")[0] == 200
    assert len(server.answered) == 3
    after = counts()
    # Each answer is counted once it is received: the next request, on the same connection,
    # already finds it in /metrics.
    assert {what: after[what] - before[what] for what in series} == dict.fromkeys(series, 3.0)


def test_a_request_the_shortcut_cannot_answer_takes_the_app(
    server: ThreadedServer, layout: dict[str, Any]
) -> None:
    client = Client(server, "sky", "pw")
    client.manifest("GET", "latest")
    server.answered.clear()
    # A client that takes no index gets the chosen manifest: the app chooses it.
    status, _, body = client.manifest("GET", "latest", accept=(OCI_MANIFEST,))
    assert status == 200 and sha256(body) == layout["skylake"]["digest"]
    # No token, a bad token, an unknown tag, a bad name: the app's errors, unchanged.
    assert client.request("GET", f"/v2/{REPOSITORY}/manifests/latest", [])[0] == 401
    bad = [("Authorization", "Bearer not-a-token")]
    assert client.request("GET", f"/v2/{REPOSITORY}/manifests/latest", bad)[0] == 401
    assert client.manifest("GET", "nothing-here")[0] == 404
    status, _, body = client.request(
        "GET", "/v2/Bad_Name/manifests/latest", [("Authorization", f"Bearer {client.token}")]
    )
    assert status in (400, 401) and json.loads(body)["errors"]
    assert server.answered == []


def test_an_expired_token_is_refused_though_its_answer_is_warm(
    server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(server, "sky", "pw")
    assert client.manifest("GET", "latest")[0] == 200
    assert client.manifest("GET", "latest")[0] == 200  # answered from memory
    # Past the token's expiry, for MetaHub's verified-token cache and for PyJWT alike.
    later = time.time() + server.settings.token.ttl + 1

    class Later(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Later:
            return cls.fromtimestamp(later, tz)

    monkeypatch.setattr(tokens.time, "time", lambda: later)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    server.answered.clear()
    status, headers, body = client.manifest("GET", "latest")
    assert status == 401
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert 'error="invalid_token"' in dict(headers)["www-authenticate"]
    assert server.answered == []


def test_a_revoked_credential_is_refused_though_its_answer_is_warm(
    server: ThreadedServer,
) -> None:
    management = server.hub.management
    server.call(management.create_machine_type("admin", "edited", ["cpu:skylake"]))
    issued = server.call(management.create_credential("admin", "edited"))
    client = Client(server, issued.login, issued.secret)
    assert client.manifest("GET", "latest")[0] == 200
    server.answered.clear()
    assert client.manifest("GET", "latest")[0] == 200
    assert len(server.answered) == 1
    server.call(management.revoke_credential("admin", issued.id))
    status, _, body = client.manifest("GET", "latest")
    assert status == 401
    assert "not active" in json.loads(body)["errors"][0]["message"]
    assert len(server.answered) == 1


def test_a_machine_type_given_new_features_is_served_its_new_choice_at_once(
    server: ThreadedServer, layout: dict[str, Any]
) -> None:
    management = server.hub.management
    server.call(management.create_machine_type("admin", "edited", ["cpu:skylake"]))
    issued = server.call(management.create_credential("admin", "edited"))
    client = Client(server, issued.login, issued.secret)
    client.manifest("GET", "latest")
    server.answered.clear()
    status, _, body = client.manifest("GET", "latest")
    assert len(server.answered) == 1
    assert chosen(body) == [layout["skylake"]["digest"], layout["arm64"]["digest"]]
    server.call(management.update_machine_type("admin", "edited", features=["cpu:haswell"]))
    status, headers, body = client.manifest("GET", "latest")
    assert status == 200
    assert chosen(body) == [layout["haswell"]["digest"], layout["arm64"]["digest"]]
    assert dict((k.lower(), v) for k, v in headers)["docker-content-digest"] == sha256(body)
    assert len(server.answered) == 1  # filtered anew by the app, not answered from memory
    client.manifest("GET", "latest")
    assert len(server.answered) == 2  # and then warm again


def test_a_connection_of_warm_pulls_is_kept_while_used_and_closed_once_idle(
    tmp_path: Path, layout: dict[str, Any]
) -> None:
    """The shortcut's keep-alive timer runs on across its answers: it must neither close a
    connection in use (it fires while pulls come, and waits on) nor keep an idle one open."""
    keep_alive = 0.6
    running = ThreadedServer(tmp_path, layout["path"], keep_alive=keep_alive)
    running.start()
    try:
        client = Client(running, "sky", "pw")  # its token came on the full path: uvicorn's timer
        start, pulls = time.monotonic(), 0
        while time.monotonic() - start < keep_alive * 3:  # a closed connection would raise
            time.sleep(keep_alive / 4)
            assert client.manifest("GET", "latest")[0] == 200
            pulls += 1
        assert len(running.answered) >= pulls - 1  # all but the first answered from memory
        sock = client.connection.sock
        assert sock is not None
        sock.settimeout(keep_alive * 5)
        idle_start = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server once idle for its keep-alive time
        idle = time.monotonic() - idle_start
        # Not at once (the timer counts from the last answer), and not much after.
        assert keep_alive / 2 <= idle < keep_alive * 3
    finally:
        running.stop()
