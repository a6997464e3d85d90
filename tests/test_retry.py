"""Upstream retries: connection errors, 5xx and 429 are tried again with backoff, honouring
`Retry-After`; another 4xx and a timeout never are.

The upstream is a real HTTP server on loopback (tests/support/scripted_registry.py) that answers
what each test queues before answering properly, and counts the requests where they arrive;
MetaHub runs in this process.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import orjson
import pytest

from metahub.client.retry import RetryPolicy
from tests.support.inprocess import InProcessHub
from tests.support.oci import OCI_MANIFEST
from tests.support.scripted_registry import DROP, Answer, Blob, ScriptedRegistry

RETRIES = 2
MAX_DELAY = 2.0


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedRegistry]:
    with ScriptedRegistry() as server:
        yield server


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedRegistry
) -> Iterator[InProcessHub]:
    config = {
        "upstream": {
            "url": upstream.url,
            "read_timeout": 1,
            "retries": RETRIES,
            "retry_base_delay": 0.01,
            "retry_max_delay": MAX_DELAY,
        },
        "anonymous": {"unfiltered": True},
    }
    with InProcessHub(tmp_path_factory.mktemp("retry"), config) as running:
        yield running


@pytest.fixture
def client(hub: InProcessHub) -> Iterator[httpx.Client]:
    with hub.client() as http:
        yield http


def image(upstream: ScriptedRegistry, name: str) -> tuple[str, bytes]:
    """A manifest tagged `latest` in `name`; returns its path upstream and its bytes."""
    data = orjson.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "name": name})
    upstream.add_manifest(name, "latest", data, OCI_MANIFEST)
    return f"/v2/{name}/manifests/latest", data


def message(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["message"])


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_5xx_and_429_are_retried_until_the_upstream_answers(
    client: httpx.Client, upstream: ScriptedRegistry, status: int
):
    path, data = image(upstream, f"retry/status-{status}")
    upstream.queue("GET", path, Answer(status), Answer(status))

    response = client.get(path)

    assert response.status_code == 200, response.text
    assert response.content == data
    assert upstream.count("GET", path) == 3


def test_dropped_connections_are_retried(client: httpx.Client, upstream: ScriptedRegistry):
    path, data = image(upstream, "retry/dropped")
    upstream.queue("GET", path, Answer(DROP), Answer(DROP))

    response = client.get(path)

    assert response.status_code == 200, response.text
    assert response.content == data
    assert upstream.count("GET", path) == 3


def test_gives_up_after_the_configured_retries(client: httpx.Client, upstream: ScriptedRegistry):
    path, _ = image(upstream, "retry/always-503")
    upstream.queue("GET", path, *[Answer(503)] * (RETRIES + 1))

    response = client.get(path)

    assert response.status_code == 502
    assert upstream.url in message(response)
    assert upstream.count("GET", path) == RETRIES + 1


def test_gives_up_on_connections_that_keep_dropping(
    client: httpx.Client, upstream: ScriptedRegistry
):
    path, _ = image(upstream, "retry/always-dropped")
    upstream.queue("GET", path, *[Answer(DROP)] * 2 * (RETRIES + 1))

    response = client.get(path)

    assert response.status_code == 503
    assert response.json()["errors"][0]["code"] == "UPSTREAM_UNAVAILABLE"
    assert upstream.url in message(response)
    # aiohttp itself sends an idempotent request again, once, when a kept-alive connection
    # closes under it (RFC 9112 section 9.3.1.1); that is not one of our retries.
    assert RETRIES + 1 <= upstream.count("GET", path) <= 2 * (RETRIES + 1)


def test_retry_after_in_seconds_is_honoured(client: httpx.Client, upstream: ScriptedRegistry):
    path, data = image(upstream, "retry/after-seconds")
    upstream.queue("GET", path, Answer(429, {"Retry-After": "1"}))

    response = client.get(path)

    assert response.status_code == 200, response.text
    assert response.content == data
    first, second = upstream.requests("GET", path)
    assert second.at - first.at >= 1.0  # the backoff alone would wait at most 0.01 s


def test_retry_after_as_a_date_is_honoured(client: httpx.Client, upstream: ScriptedRegistry):
    path, data = image(upstream, "retry/after-date")
    when = int(time.time()) + 2  # whole seconds, as HTTP dates have them
    upstream.queue("GET", path, Answer(429, {"Retry-After": formatdate(when, usegmt=True)}))

    response = client.get(path)

    assert response.status_code == 200, response.text
    assert response.content == data
    _, second = upstream.requests("GET", path)
    assert second.wall >= when - 0.05  # not asked again before the date


def test_a_retry_after_beyond_the_longest_wait_goes_to_the_client_at_once(
    client: httpx.Client, upstream: ScriptedRegistry
):
    path, _ = image(upstream, "retry/after-long")
    upstream.queue("GET", path, Answer(429, {"Retry-After": "30"}))

    response = client.get(path)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert response.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert upstream.count("GET", path) == 1


@pytest.mark.parametrize(("status", "client_status"), [(400, 502), (403, 502), (404, 404)])
def test_another_4xx_is_never_retried(
    client: httpx.Client, upstream: ScriptedRegistry, status: int, client_status: int
):
    path, _ = image(upstream, f"retry/client-error-{status}")
    upstream.queue("GET", path, Answer(status))

    response = client.get(path)

    assert response.status_code == client_status
    assert upstream.count("GET", path) == 1


def test_a_timeout_is_not_retried(client: httpx.Client, upstream: ScriptedRegistry):
    path, _ = image(upstream, "retry/slow")
    upstream.queue("GET", path, Answer(0, delay=2))  # read_timeout is 1 s

    response = client.get(path)

    assert response.status_code == 504
    assert upstream.url in message(response)
    assert upstream.count("GET", path) == 1


def test_blob_downloads_are_retried(client: httpx.Client, upstream: ScriptedRegistry):
    blob = upstream.add_blob(Blob(b"retried blob " * 1000))
    path = f"/v2/retry/blob/blobs/{blob.digest}"
    upstream.queue("GET", path, Answer(503), Answer(DROP))

    response = client.get(path)

    assert response.status_code == 200
    assert response.content == blob.content()
    assert upstream.count("GET", path) == 3


# -- the policy itself --------------------------------------------------------------------


def test_backoff_grows_exponentially_with_full_jitter():
    policy = RetryPolicy(retries=4, base_delay=0.1, max_delay=0.5)
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.5]):
        delays = [policy.delay(attempt, None) for _ in range(300)]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        waits = [d for d in delays if d is not None]
        # Full jitter: spread over the whole window, not bunched at its end.
        assert min(waits) < ceiling * 0.25
        assert max(waits) > ceiling * 0.75
    assert policy.delay(4, None) is None


def test_retry_after_within_the_longest_wait_replaces_the_backoff():
    policy = RetryPolicy(retries=2, base_delay=0.1, max_delay=5)
    assert policy.delay(0, "3") == 3.0
    assert policy.delay(0, "6") is None
    when = policy.delay(0, formatdate(time.time() + 4, usegmt=True))
    assert when is not None and 2.5 <= when <= 4
    assert policy.delay(0, formatdate(time.time() - 60, usegmt=True)) == 0.0
    not_a_date = policy.delay(1, "soon")
    assert not_a_date is not None and 0 <= not_a_date <= 0.2
    assert policy.delay(2, "1") is None  # retries spent: Retry-After does not add one


# -- connect timeout ----------------------------------------------------------------------


@pytest.fixture
def unanswered() -> Iterator[str]:
    """A port whose accept queue is full: connections to it are never established."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    queued = []
    for _ in range(3):
        pending = socket.socket()
        pending.setblocking(False)
        pending.connect_ex(address)
        queued.append(pending)
    yield f"http://127.0.0.1:{address[1]}"
    for pending in queued:
        pending.close()
    listener.close()


def test_an_upstream_that_never_accepts_the_connection_times_out(tmp_path: Path, unanswered: str):
    config = {
        "upstream": {"url": unanswered, "connect_timeout": 0.5},
        "anonymous": {"unfiltered": True},
    }
    with InProcessHub(tmp_path, config) as hub, hub.client() as http:
        response = http.get("/v2/retry/unanswered/manifests/latest")

    assert response.status_code == 504
    assert response.json()["errors"][0]["code"] == "UPSTREAM_TIMEOUT"
    assert unanswered in message(response)
