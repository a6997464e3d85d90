"""The manifest caches: content by digest, tag -> digest with a TTL and HEAD revalidation,
filtered answers per machine type, single flight, and stale-if-error.

Upstream requests are counted where they arrive: in the access log of a real docker-registry
(tests/support/registry_log.py), or by the scripted registry that can hold an answer until every
client is waiting for it. The registry is stopped mid-test to take the upstream away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from metahub.upstream.caching import CachingUpstream
from metahub.upstream.registry import RegistryUpstream
from tests.support import feature_images
from tests.support.feature_images import MACHINE_TYPES, FeatureIndex, entries, feature_index
from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher
from tests.support.registry_log import metahub_requests
from tests.support.scrape import Samples, scrape, value
from tests.support.scripted_registry import DROP, Answer, ScriptedRegistry
from tests.support.servers import RegistryServer

BROADWELL, SKYLAKE = feature_images.FEATURES
ANONYMOUS_BROADWELL = {"machine_type": "bw"}
CLIENTS = 200
COALESCED = "metahub_coalesced_waiters_total"
ADMIN_TOKEN = "cache-tests-admin-token"


def config(upstream_url: str, **cache: object) -> dict[str, object]:
    return {
        "upstream": {"url": upstream_url, "retry_base_delay": 0.01, "read_timeout": 1},
        "machine_types": MACHINE_TYPES,
        "anonymous": ANONYMOUS_BROADWELL,
        "admin": {"tokens": [ADMIN_TOKEN]},
        **({"cache": cache} if cache else {}),
    }


def pushed(registry: RegistryServer, name: str, seed: str, tag: str = "latest") -> FeatureIndex:
    image = feature_index(seed)
    pusher = Pusher(registry.url)
    feature_images.push(pusher, name, tag, image)
    pusher.close()
    return image


def filter_runs(hub: MetaHubServer, name: str, machine_type: str) -> int:
    """How often MetaHub ran selection for `name:latest` and this machine type (its log says)."""
    text = hub.log_path.read_text(errors="replace")
    return text.count(f"filtered {name}:latest for machine type {machine_type}:")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache-manifests")


@pytest.fixture(scope="module")
def upstream(workdir: Path) -> Iterator[RegistryServer]:
    with RegistryServer(workdir / "upstream") as registry:
        yield registry


@pytest.fixture(scope="module")
def hub(workdir: Path, upstream: RegistryServer) -> Iterator[MetaHubServer]:
    """Default cache settings: tags trusted for 60 s."""
    (workdir / "hub").mkdir()
    with MetaHubServer(workdir / "hub", config(upstream.url)) as server:
        yield server


@pytest.fixture(scope="module")
def revalidating(workdir: Path, upstream: RegistryServer) -> Iterator[MetaHubServer]:
    """Tags are never trusted without asking: every request revalidates."""
    (workdir / "revalidating").mkdir()
    with MetaHubServer(workdir / "revalidating", config(upstream.url, tag_ttl=0)) as server:
        yield server


# -- coalescing ---------------------------------------------------------------------------


async def test_200_simultaneous_cold_requests_cost_one_upstream_get(
    upstream: RegistryServer, hub: MetaHubServer
):
    image = pushed(upstream, "cache/crowd", "crowd")
    path = "/v2/cache/crowd/manifests/latest"

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=hub.url, limits=limits, timeout=60) as client:
        responses = await asyncio.gather(*[client.get(path) for _ in range(CLIENTS)])

    assert {r.status_code for r in responses} == {200}
    bodies = {r.content for r in responses}
    assert len(bodies) == 1
    assert entries(bodies.pop()) == [image.manifest_digest(BROADWELL)]
    assert len(metahub_requests(upstream, "GET", path)) == 1
    assert len(metahub_requests(upstream, "HEAD", path)) == 0
    assert filter_runs(hub, "cache/crowd", "bw") == 1


async def test_requests_that_arrive_while_the_upstream_answers_wait_for_that_answer(
    scripted_hub: tuple[ScriptedRegistry, MetaHubServer],
):
    """The upstream holds its answer until every client waits: one request reaches it.

    First a cold tag (one GET), then the same tag once its TTL (0 here) has run out (one HEAD).
    """
    scripted, hub = scripted_hub
    feature_images.serve(scripted, "cache/held", "latest", feature_index("held"))
    path = "/v2/cache/held/manifests/latest"
    bodies = set()
    for result in ("miss", "stale"):
        before = scrape(hub.url)
        release = scripted.hold(path)
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=hub.url, limits=limits, timeout=60) as client:
            pending = [asyncio.create_task(client.get(path)) for _ in range(CLIENTS)]
            await wait_for_metric(hub.url, before, CLIENTS, cache="tag", result=result)
            release.set()
            responses = await asyncio.gather(*pending)
        scripted.holds.pop(path)
        waiters = value(scrape(hub.url), COALESCED, kind="manifest")

        assert {r.status_code for r in responses} == {200}
        bodies |= {r.content for r in responses}
        assert waiters - value(before, COALESCED, kind="manifest") == CLIENTS - 1

    assert len(bodies) == 1
    assert scripted.count("GET", path) == 1
    assert scripted.count("HEAD", path) == 1


async def wait_for_metric(url: str, before: Samples, more: float, **labels: str) -> None:
    """Until the tag cache has counted `more` lookups with these labels since `before`."""
    name = "metahub_cache_requests_total"
    wanted = value(before, name, **labels) + more
    deadline = time.monotonic() + 30
    while value(await asyncio.to_thread(scrape, url), name, **labels) < wanted:
        assert time.monotonic() < deadline, f"{name}{labels} never reached {wanted}"
        await asyncio.sleep(0.05)


# -- content and tag caches -------------------------------------------------------------


def test_a_fresh_tag_and_known_digests_need_no_upstream_request(
    upstream: RegistryServer, hub: MetaHubServer
):
    image = pushed(upstream, "cache/fresh", "fresh")
    base = "/v2/cache/fresh/manifests/"
    child = image.manifest_digest(BROADWELL)
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        first = client.get(base + "latest")
        assert client.get(base + child).content == image.manifests[BROADWELL]
        before = len(metahub_requests(upstream))
        for _ in range(5):
            assert client.get(base + "latest").content == first.content
            assert (
                client.head(base + "latest").headers["docker-content-digest"]
                == (first.headers["docker-content-digest"])
            )
            assert client.get(base + child).content == image.manifests[BROADWELL]
            # The upstream's own index, by its digest, comes from the content cache too.
            assert client.get(base + image.digest).content == image.index

    assert len(metahub_requests(upstream)) == before
    assert len(metahub_requests(upstream, "GET", base + "latest")) == 1
    assert len(metahub_requests(upstream, "GET", base + child)) == 1
    assert filter_runs(hub, "cache/fresh", "bw") == 1


def test_a_stale_tag_is_revalidated_with_head_and_fetched_only_when_it_moved(
    upstream: RegistryServer, revalidating: MetaHubServer
):
    path = "/v2/cache/moving/manifests/latest"
    first = pushed(upstream, "cache/moving", "moving-1")
    with httpx.Client(base_url=revalidating.url, timeout=30) as client:
        assert entries(client.get(path).content) == [first.manifest_digest(BROADWELL)]
        assert len(metahub_requests(upstream, "GET", path)) == 1

        for _ in range(3):
            assert entries(client.get(path).content) == [first.manifest_digest(BROADWELL)]
        assert len(metahub_requests(upstream, "HEAD", path)) == 3
        assert len(metahub_requests(upstream, "GET", path)) == 1

        second = pushed(upstream, "cache/moving", "moving-2")
        assert entries(client.get(path).content) == [second.manifest_digest(BROADWELL)]

    assert len(metahub_requests(upstream, "HEAD", path)) == 4
    assert len(metahub_requests(upstream, "GET", path)) == 2
    assert filter_runs(revalidating, "cache/moving", "bw") == 2


def test_the_filtered_answer_is_cached_per_machine_type(
    upstream: RegistryServer, hub: MetaHubServer
):
    image = pushed(upstream, "cache/types", "types")
    path = "/v2/cache/types/manifests/latest"
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        for _ in range(3):
            broadwell = client.get(path, auth=("bw", "bw-pass"))
            skylake = client.get(path, auth=("sk", "sk-pass"))
            assert entries(broadwell.content) == [image.manifest_digest(BROADWELL)]
            assert entries(skylake.content) == [image.manifest_digest(SKYLAKE)]

    assert filter_runs(hub, "cache/types", "bw") == 1
    assert filter_runs(hub, "cache/types", "sk") == 1
    assert len(metahub_requests(upstream, "GET", path)) == 1
    samples = scrape(hub.url)
    assert value(samples, "metahub_cache_requests_total", cache="filtered", result="hit") >= 4


def test_a_changed_machine_type_gets_a_new_filtered_answer(
    upstream: RegistryServer, hub: MetaHubServer
):
    image = pushed(upstream, "cache/retyped", "retyped")
    path = "/v2/cache/retyped/manifests/latest"
    admin = httpx.Client(
        base_url=f"{hub.url}/api/v1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    created = admin.post("/machine-types", json={"name": "retyped", "features": [BROADWELL]})
    assert created.status_code == 201, created.text
    issued = admin.post("/machine-types/retyped/credentials", json={})
    assert issued.status_code == 201, issued.text
    login = (issued.json()["login"], issued.json()["password"])

    with httpx.Client(base_url=hub.url, auth=login, timeout=30) as client:
        assert entries(client.get(path).content) == [image.manifest_digest(BROADWELL)]
        changed = admin.patch("/machine-types/retyped", json={"features": [SKYLAKE]})
        assert changed.status_code == 200, changed.text
        deadline = time.monotonic() + 20  # the change reaches the directory within seconds
        while entries(client.get(path).content) != [image.manifest_digest(SKYLAKE)]:
            assert time.monotonic() < deadline, "the changed machine type never took effect"
            time.sleep(0.1)
    admin.close()

    assert filter_runs(hub, "cache/retyped", "retyped") == 2
    assert len(metahub_requests(upstream, "GET", path)) == 1


# -- stale-if-error ---------------------------------------------------------------------


def test_a_known_tag_is_served_from_cache_while_the_upstream_is_down(
    tmp_path: Path, registry: RegistryServer
):
    image = pushed(registry, "cache/outage", "outage")
    pushed(registry, "cache/unseen", "unseen")
    base = "/v2/cache/outage/manifests/"
    child = image.manifest_digest(BROADWELL)
    with (
        MetaHubServer(tmp_path, config(registry.url, tag_ttl=0)) as hub,
        httpx.Client(base_url=hub.url, timeout=30) as client,
    ):
        # What a runtime does: resolve the tag, then fetch by digest.
        tagged = client.get(base + "latest")
        filtered_digest = tagged.headers["docker-content-digest"]
        assert client.get(base + filtered_digest).status_code == 200
        assert client.get(base + child).status_code == 200

        registry.stop()
        stale = client.get(base + "latest")
        head = client.head(base + "latest")
        by_filtered_digest = client.get(base + filtered_digest)
        by_upstream_digest = client.get(base + child)
        unseen = client.get("/v2/cache/unseen/manifests/latest")
        registry.start()
        fresh = client.get(base + "latest")
        log = hub.log_path.read_text()

    assert stale.status_code == 200
    assert stale.content == tagged.content
    assert stale.headers["warning"].startswith("110 ")
    assert head.status_code == 200
    assert head.headers["docker-content-digest"] == filtered_digest
    assert head.headers["warning"].startswith("110 ")
    assert by_filtered_digest.content == tagged.content
    assert by_upstream_digest.content == image.manifests[BROADWELL]
    assert unseen.status_code == 503
    assert unseen.json()["errors"][0]["code"] == "UPSTREAM_UNAVAILABLE"
    assert registry.url in unseen.json()["errors"][0]["message"]
    assert "serving cache/outage:latest from cache" in log
    assert fresh.status_code == 200
    assert "warning" not in fresh.headers
    assert fresh.content == tagged.content


@pytest.mark.parametrize(
    "trouble",
    [
        pytest.param(Answer(503), id="5xx"),
        pytest.param(Answer(429), id="429"),
        pytest.param(Answer(0, delay=2), id="timeout"),
        pytest.param(Answer(DROP), id="connection-dropped"),
    ],
)
def test_a_known_tag_is_served_from_cache_while_the_upstream_fails(
    scripted_hub: tuple[ScriptedRegistry, MetaHubServer],
    trouble: Answer,
    request: pytest.FixtureRequest,
):
    scripted, hub = scripted_hub
    name = f"cache/trouble-{request.node.callspec.id}"
    image = feature_index(name)
    feature_images.serve(scripted, name, "latest", image)
    path = f"/v2/{name}/manifests/latest"
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        served = client.get(path)
        assert "warning" not in served.headers
        stale_before = value(scrape(hub.url), "metahub_stale_serves_total")
        scripted.trouble = trouble
        try:
            stale = client.get(path)
        finally:
            scripted.trouble = None
        recovered = client.get(path)

    assert stale.status_code == 200
    assert stale.content == served.content
    assert stale.headers["warning"].startswith("110 ")
    assert value(scrape(hub.url), "metahub_stale_serves_total") == stale_before + 1
    assert f"serving {name}:latest from cache" in hub.log_path.read_text()
    assert scripted.count("HEAD", path) >= 2  # it did ask, and asks again once recovered
    assert "warning" not in recovered.headers
    assert recovered.content == served.content


@pytest.fixture(scope="module")
def scripted_hub(workdir: Path) -> Iterator[tuple[ScriptedRegistry, MetaHubServer]]:
    (workdir / "scripted").mkdir()
    with (
        ScriptedRegistry() as scripted,
        MetaHubServer(workdir / "scripted", config(scripted.url, tag_ttl=0)) as hub,
    ):
        yield scripted, hub


async def test_a_manifest_read_afresh_carries_its_document_and_the_cache_keeps_only_bytes(
    tmp_path: Path,
) -> None:
    # The upstream client reads each manifest to check it is a JSON object; that document goes
    # on with the fresh answer (selection does not read the bytes again) and is never cached.
    with RegistryServer(tmp_path / "upstream") as registry:
        image = pushed(registry, "cache/document", "document")
        upstream = CachingUpstream(RegistryUpstream(registry.url))
        try:
            fresh = await upstream.get_manifest("cache/document", "latest")
            assert fresh.document is not None
            assert fresh.document == orjson.loads(fresh.data) == orjson.loads(image.index)
            cached = await upstream.get_manifest("cache/document", "latest")
            by_digest = await upstream.get_manifest("cache/document", fresh.digest)
            assert cached.data == by_digest.data == fresh.data
            assert cached.document is None and by_digest.document is None
            assert cached == fresh  # the document takes no part in equality
        finally:
            await upstream.close()
