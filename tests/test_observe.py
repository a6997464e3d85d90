"""Observability: /metrics in Prometheus format, the access log (plain and JSON lines),
/healthz and /readyz, against a real docker-registry and real `metahub serve` processes.

Metrics are read with prometheus_client's own parser, and compared with what the test did and
with what the registry logged, not with numbers MetaHub reports elsewhere.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from tests.support import feature_images
from tests.support.feature_images import MACHINE_TYPES, feature_index
from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher
from tests.support.registry_log import metahub_requests
from tests.support.scrape import Samples, scrape, value
from tests.support.servers import RegistryServer

ACCESS_LINE = re.compile(
    r'metahub\.access: (?P<client>\S+) "(?P<method>[A-Z]+) (?P<path>\S+)" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<ms>[\d.]+)ms(?: upstream=(?P<upstream>\S+))?$"
)


def config(registry: RegistryServer, **log: str) -> dict[str, object]:
    return {
        "upstream": {"url": registry.url, "retry_base_delay": 0.01},
        "machine_types": MACHINE_TYPES,
        "anonymous": {"machine_type": "bw"},
        **({"log": log} if log else {}),
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("observe")


@pytest.fixture(scope="module")
def upstream(workdir: Path) -> Iterator[RegistryServer]:
    with RegistryServer(workdir / "upstream") as registry:
        pusher = Pusher(registry.url)
        for name in ("observe/app", "observe/metrics"):
            feature_images.push(pusher, name, "latest", feature_index(name))
        pusher.blob("observe/metrics", LAYER)
        pusher.close()
        yield registry


LAYER = b"observed layer bytes\n" * 5000
T = TypeVar("T")


@pytest.fixture(scope="module")
def hub(workdir: Path, upstream: RegistryServer) -> Iterator[MetaHubServer]:
    (workdir / "hub").mkdir()
    with MetaHubServer(workdir / "hub", config(upstream)) as server:
        yield server


def test_metrics_count_what_was_served(hub: MetaHubServer, upstream: RegistryServer):
    tag = "/v2/observe/metrics/manifests/latest"
    blob = f"/v2/observe/metrics/blobs/{feature_images.sha256(LAYER)}"
    before = scrape(hub.url)
    asked_before = metahub_requests(upstream, "GET")
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        assert client.get(tag).status_code == 200
        assert client.get(tag).status_code == 200
        assert client.head(tag).status_code == 200
        assert client.get("/v2/observe/metrics/manifests/missing").status_code == 404
        assert client.get(blob).content == LAYER
        exposition = client.get("/metrics")
    # Each request is counted once its response is out: wait for the last of the five.
    after = eventually(lambda: scrape(hub.url), lambda a: counted(a) - counted(before) == 5)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert exposition.headers["content-type"] == CONTENT_TYPE_LATEST
    requests = "metahub_http_requests_total"
    assert grew(requests, route="manifest", method="GET", status="200") == 2
    assert grew(requests, route="manifest", method="HEAD", status="200") == 1
    assert grew(requests, route="manifest", method="GET", status="404") == 1
    assert grew(requests, route="blob", method="GET", status="200") == 1
    latency = "metahub_http_request_duration_seconds"
    assert grew(f"{latency}_count", route="manifest") == 4
    assert grew(f"{latency}_bucket", route="manifest", le="+Inf") == 4
    assert grew(f"{latency}_bucket", route="manifest", le="30.0") == 4
    assert grew("metahub_bytes_served_total", route="blob") == len(LAYER)
    cache = "metahub_cache_requests_total"
    assert grew(cache, cache="tag", result="miss") == 2  # latest, then missing
    assert grew(cache, cache="tag", result="hit") == 2
    assert grew(cache, cache="filtered", result="miss") >= 1
    assert grew(cache, cache="filtered", result="hit") == 2
    # Upstream requests by outcome, as many as the registry itself logged.
    asked = metahub_requests(upstream, "GET")[len(asked_before) :]
    assert {r.uri for r in asked} == {tag, blob, "/v2/observe/metrics/manifests/missing"}
    # Labelled by the upstream's registry: the single `upstream:` is named by its host:port.
    registry = urlsplit(upstream.url).netloc
    assert grew(
        "metahub_upstream_requests_total", upstream=registry, method="GET", outcome="200"
    ) == sum(1 for r in asked if r.status == 200)
    assert (
        grew("metahub_upstream_requests_total", upstream=registry, method="GET", outcome="404") == 1
    )
    for family in (
        "metahub_coalesced_waiters_total",
        "metahub_stale_serves_total",
        "metahub_upstream_retries_total",
        "metahub_digest_mismatches_total",
        "metahub_blob_cache_bytes",
    ):
        assert f"# TYPE {family} " in exposition.text


def counted(samples: Samples) -> float:
    """Registry API requests counted so far (manifests and blobs)."""
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "metahub_http_requests_total" and dict(labels)["route"] in ("manifest", "blob")
    )


def eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 20) -> T:
    """`read()` once `done` holds for it: a request is logged and counted after its response."""
    deadline = time.monotonic() + timeout
    while not done(result := read()):
        assert time.monotonic() < deadline, "never came true"
        time.sleep(0.02)
    return result


def access_lines(hub: MetaHubServer) -> list[re.Match[str]]:
    return [m for m in map(ACCESS_LINE.search, hub.log_path.read_text().splitlines()) if m]


def test_plain_access_log_has_one_line_per_request(hub: MetaHubServer, upstream: RegistryServer):
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        response = client.get("/v2/observe/app/manifests/latest")
        client.get("/v2/observe/app/manifests/nothing-here")

    lines = eventually(
        lambda: access_lines(hub),
        lambda ms: any(m["path"] == "/v2/observe/app/manifests/nothing-here" for m in ms),
    )
    served = [m for m in lines if m["path"] == "/v2/observe/app/manifests/latest"]
    missing = [m for m in lines if m["path"] == "/v2/observe/app/manifests/nothing-here"]
    last = served[-1]
    assert (last["client"], last["method"], last["status"]) == ("127.0.0.1", "GET", "200")
    assert int(last["bytes"]) == len(response.content)
    assert float(last["ms"]) >= 0
    assert last["upstream"] == urlsplit(upstream.url).netloc  # the registry it went to
    assert missing[-1]["status"] == "404"


def test_an_encoded_newline_in_a_path_cannot_forge_a_log_line(hub: MetaHubServer):
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        client.get("/v2/a%0aforged/manifests/x")
        client.get("/v2/observe/app/manifests/after-the-forgery")

    eventually(
        lambda: hub.log_path.read_text(),
        lambda text: "after-the-forgery" in text,
    )
    mentions = [line for line in hub.log_path.read_text().splitlines() if "forged" in line]
    assert len(mentions) == 1
    (line,) = mentions
    match = ACCESS_LINE.search(line)
    assert match is not None, line
    assert match["path"] == "/v2/a\\x0aforged/manifests/x"


@pytest.fixture(scope="module")
def json_hub(workdir: Path, upstream: RegistryServer) -> Iterator[MetaHubServer]:
    (workdir / "json").mkdir()
    with MetaHubServer(workdir / "json", config(upstream, access="json")) as server:
        yield server


def test_json_access_log_is_one_json_object_a_line(
    json_hub: MetaHubServer, upstream: RegistryServer
):
    with httpx.Client(base_url=json_hub.url, timeout=30) as client:
        response = client.get("/v2/observe/app/manifests/latest")
        client.get("/healthz")

    def records() -> list[dict[str, object]]:
        return [
            json.loads(line)  # the whole line, nothing around it
            for line in json_hub.log_path.read_text().splitlines()
            if "/v2/observe/app/manifests/latest" in line or "/healthz" in line
        ]

    found = eventually(records, lambda rs: any(r["path"] == "/healthz" for r in rs))
    served = [r for r in found if r["path"] == "/v2/observe/app/manifests/latest"][-1]
    assert served["method"] == "GET"
    assert served["status"] == 200
    assert served["bytes"] == len(response.content)
    assert served["client"] == "127.0.0.1"
    assert served["upstream"] == urlsplit(upstream.url).netloc
    assert isinstance(served["duration_ms"], float | int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", served["time"])
    assert any(r["path"] == "/healthz" and r["status"] == 200 for r in found)
    assert all("upstream" not in r for r in found if r["path"] == "/healthz")


def test_ready_when_the_upstream_answers_or_the_cache_is_warm(
    tmp_path: Path, registry: RegistryServer
):
    pusher = Pusher(registry.url)
    feature_images.push(pusher, "observe/ready", "latest", feature_index("ready"))
    pusher.close()
    with (
        MetaHubServer(tmp_path, config(registry)) as hub,
        httpx.Client(base_url=hub.url, timeout=30) as client,
    ):
        up_cold = client.get("/readyz")
        registry.stop()
        down_cold = client.get("/readyz")
        alive_down = client.get("/healthz")
        registry.start()
        assert client.get("/v2/observe/ready/manifests/latest").status_code == 200
        registry.stop()
        down_warm = client.get("/readyz")
        registry.start()
        up_warm = client.get("/readyz")

    assert up_cold.status_code == 200
    assert up_cold.json()["status"] == "ready"
    assert down_cold.status_code == 503
    assert down_cold.json()["status"] == "unready"
    assert registry.url in down_cold.json()["upstream"]
    assert alive_down.status_code == 200
    assert down_warm.status_code == 200
    assert down_warm.json() == {"status": "ready", "upstream": "unreachable", "cache": "warm"}
    assert up_warm.status_code == 200


@pytest.fixture(scope="module")
def two_workers(workdir: Path, upstream: RegistryServer) -> Iterator[MetaHubServer]:
    (workdir / "two-workers").mkdir()
    with MetaHubServer(workdir / "two-workers", config(upstream), workers=2) as server:
        yield server


def test_with_two_workers_a_warm_pull_is_counted_before_its_answer_arrives(
    two_workers: MetaHubServer,
) -> None:
    """Warm pulls are answered from memory with their counts applied once per event-loop turn
    (metrics.count): before the answer leaves, so a scrape made after it, whichever worker
    answers the scrape (prometheus_client's multiprocess files), already holds it."""
    token = httpx.get(
        f"{two_workers.url}/token",
        params={"service": "metahub", "scope": "repository:observe/app:pull"},
        auth=("sk", "sk-pass"),
        timeout=30,
    ).json()["token"]
    pulled = ("metahub_http_requests_total", "manifest", "GET", "200")

    def pulls() -> float:
        name, route, method, status = pulled
        return value(scrape(two_workers.url), name, route=route, method=method, status=status)

    headers = {"Authorization": f"Bearer {token}", "Accept": feature_images.OCI_INDEX}
    with httpx.Client(base_url=two_workers.url, headers=headers, timeout=30) as client:
        start = pulls()
        # The first pull on this connection warms its worker (the full path, counted once its
        # response is out); the pulls after it are answered from memory.
        assert client.get("/v2/observe/app/manifests/latest").status_code == 200
        before = eventually(pulls, lambda counted: counted == start + 1)
        for number in range(1, 9):
            assert client.get("/v2/observe/app/manifests/latest").status_code == 200
            assert pulls() == before + number  # each scrape on a new connection
    assert (
        value(
            scrape(two_workers.url),
            "metahub_cache_requests_total",
            cache="filtered",
            result="hit",
        )
        >= 7
    )
