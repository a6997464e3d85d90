"""Upstream trouble reaches the client as a clear registry error that names the upstream.

The misbehaving upstream is a real HTTP server on loopback that answers each path as the test
tells it to; MetaHub runs in this process.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.inprocess import InProcessHub

LOGIN = {"name": "t", "login": "t", "password": "t", "features": ["cpu:haswell"]}


class Scripted(BaseHTTPRequestHandler):
    """Answers `/v2/<status>/...` repositories with that behaviour."""

    def do_GET(self) -> None:
        if self.path == "/v2/":
            self._answer(200, b"{}")
        elif self.path.startswith("/v2/limited/"):
            self._answer(
                429,
                b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
                {"Retry-After": "7"},
            )
        elif self.path.startswith("/v2/broken/"):
            self._answer(500, b"oops")
        elif self.path.startswith("/v2/slow/"):
            time.sleep(3)
            self._answer(200, b"{}")
        elif self.path.startswith("/v2/garbage/"):
            self._answer(
                200, b"not json at all", {"Content-Type": "application/vnd.oci.image.index.v1+json"}
            )
        else:
            self._answer(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}')

    do_HEAD = do_GET

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def scripted() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, scripted: str) -> Iterator[httpx.Client]:
    config = {"upstream": {"url": scripted, "read_timeout": 1}, "machine_types": [LOGIN]}
    with (
        InProcessHub(tmp_path_factory.mktemp("trouble"), config) as hub,
        hub.client(auth=("t", "t")) as http,
    ):
        yield http


def error(response: httpx.Response) -> dict[str, object]:
    return response.json()["errors"][0]  # type: ignore[no-any-return]


def test_rate_limit_is_passed_on_with_retry_after(client: httpx.Client, scripted: str):
    response = client.get("/v2/limited/image/manifests/latest")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert error(response)["code"] == "TOOMANYREQUESTS"
    assert scripted in str(error(response)["message"])


def test_upstream_5xx_is_a_502(client: httpx.Client, scripted: str):
    response = client.get("/v2/broken/image/manifests/latest")
    assert response.status_code == 502
    assert scripted in str(error(response)["message"])


def test_slow_upstream_is_a_504(client: httpx.Client, scripted: str):
    response = client.get("/v2/slow/image/manifests/latest")
    assert response.status_code == 504
    assert scripted in str(error(response)["message"])


def test_an_index_that_is_not_json_is_a_502(client: httpx.Client, scripted: str):
    response = client.get("/v2/garbage/image/manifests/latest")
    assert response.status_code == 502
    assert scripted in str(error(response)["message"])


def test_upstream_404_is_manifest_unknown(client: httpx.Client):
    response = client.get("/v2/missing/image/manifests/latest")
    assert response.status_code == 404
    assert error(response)["code"] == "MANIFEST_UNKNOWN"


def test_config_errors_stop_serve_with_the_key_named(tmp_path: Path):
    import subprocess
    import sys

    config = tmp_path / "bad.yaml"
    config.write_text("upstream: {url: http://x}\nmachine_types:\n  - {name: a, login: a}\n")
    result = subprocess.run(
        [sys.executable, "-m", "metahub", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "machine_types.0" in result.stderr
    assert "password" in result.stderr
    assert "Traceback" not in result.stderr
