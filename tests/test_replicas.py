"""Replicas: two `metahub serve` processes on one PostgreSQL, behind nginx, act as one registry.

Everything is real: a PostgreSQL server on loopback, a docker-registry upstream holding a
feature-tagged index, two MetaHub replicas with the same config, and nginx balancing between
them. Each test also talks to each replica directly, so that what it shows crosses replicas:
a token issued by one is accepted by the other, a filtered index one made is served by digest
by the other, and what the management API changes through one (machine types, credentials,
revocations) takes effect on the other within the refresh interval, a revocation within 5 s.
Waiting is done by polling against a deadline, never by sleeping for a guessed time.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from metahub.oci.layout_writer import (
    MEDIA_TYPE_IMAGE_INDEX,
    MEDIA_TYPE_IMAGE_MANIFEST,
    LayoutWriter,
    image,
    image_index,
    make_layer,
)
from tests.support.metahub_server import MetaHubServer
from tests.support.nginx import NginxServer
from tests.support.postgres import PostgresServer
from tests.support.push import Pusher
from tests.support.servers import RegistryServer, skopeo

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "replica-admin-token-0123456789"
REFRESH_INTERVAL = 1.0
REVOCATION_BOUND = 5.0  # a revoked credential is refused everywhere within this many seconds
SKY = ("sky", "sky-password")  # from the config, so on every replica from its start
ACCEPT = f"{MEDIA_TYPE_IMAGE_INDEX}, {MEDIA_TYPE_IMAGE_MANIFEST}"
# Each test reads its own repository, so no replica has served it before the test.
REPOSITORIES = ("hpc/tokens", "hpc/digests", "hpc/admin", "hpc/revoke", "hpc/skopeo")
# Builds of each repository's :latest index, in index order: tag -> features.
BUILDS = {
    "haswell": ("cpu:haswell",),
    "skylake": ("cpu:skylake",),
    "zen2": ("cpu:zen2",),
    "generic": (),
}


@dataclass(frozen=True)
class Cluster:
    a: MetaHubServer
    b: MetaHubServer
    balancer: NginxServer
    builds: dict[str, str]  # build -> image manifest digest, as the upstream holds it
    upstream_index: str  # the :latest index's digest at the upstream


def build_layout(path: Path) -> tuple[dict[str, str], str]:
    """An OCI layout with one feature-tagged index for each repository; builds' digests."""
    writer = LayoutWriter(path)
    entries: list[dict[str, Any]] = []
    for build, features in BUILDS.items():
        layer = make_layer({f"etc/{build}": (f"build {build}\n".encode(), 0o644)})
        descriptor: dict[str, Any] = dict(
            image(writer, layers=[layer], entrypoint=[], os="linux", architecture="amd64")
        )
        if features:
            descriptor["platform"] = {**descriptor["platform"], "features": list(features)}
        entries.append(descriptor)
    index = image_index(writer, entries)
    for repository in REPOSITORIES:
        writer.tag(f"{repository}:latest", index)
    writer.save()
    builds = {build: str(entry["digest"]) for build, entry in zip(BUILDS, entries, strict=True)}
    return builds, str(index["digest"])


def balancer(tmp: Path) -> NginxServer:
    """nginx in front of the replicas; the upstream block is filled in once their ports exist."""
    server_block = """
        client_max_body_size 0;
        location / {
            proxy_pass http://metahub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_next_upstream error timeout http_502 http_503;
        }
    """
    return NginxServer(tmp, server_block)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("replicas")
    database = postgres.create_database(f"replicas_{uuid.uuid4().hex[:12]}")
    with RegistryServer(work / "upstream") as upstream:
        builds, upstream_index = build_layout(work / "layout")
        pusher = Pusher(upstream.url)
        for repository in REPOSITORIES:
            pusher.layout(work / "layout", repository)
        pusher.close()
        lb = balancer(work / "nginx")
        config = {
            "upstream": {"url": upstream.url},
            # Clients are sent to the load balancer for tokens, whichever replica they reach.
            "public_url": lb.url,
            "database": {"url": database, "refresh_interval": REFRESH_INTERVAL},
            "admin": {"tokens": [ADMIN_TOKEN]},
            "machine_types": [
                {
                    "name": "sky",
                    "login": SKY[0],
                    "password": SKY[1],
                    "features": ["cpu:skylake"],
                }
            ],
            "log": {"access": "off"},
            # The tests poll with credentials a replica does not know yet or no longer accepts;
            # every such poll is a failed login, which must not lock the test's address out.
            "login_limit": {"failures": 100000},
        }
        (work / "a").mkdir()
        (work / "b").mkdir()
        with MetaHubServer(work / "a", config) as a, MetaHubServer(work / "b", config) as b:
            lb.http_extra = (
                f"upstream metahub {{ server {a.host}; server {b.host}; keepalive 16; }}"
            )
            with lb:
                yield Cluster(a, b, lb, builds, upstream_index)


def client(server: MetaHubServer | NginxServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


def token_from(server: MetaHubServer, login: str, password: str, repository: str) -> str:
    with client(server) as http:
        response = http.get(
            "/token",
            params={"service": "metahub", "scope": f"repository:{repository}:pull"},
            auth=(login, password),
        )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


Login = tuple[str, str]


def get_manifest(
    server: MetaHubServer, repository: str, reference: str, auth: Login | str
) -> httpx.Response:
    """GET a manifest with Basic credentials (login, password) or a Bearer token (str)."""
    headers = {"accept": ACCEPT}
    if isinstance(auth, str):
        headers["authorization"] = f"Bearer {auth}"
    with client(server) as http:
        return http.get(
            f"/v2/{repository}/manifests/{reference}",
            headers=headers,
            auth=httpx.BasicAuth(*auth) if isinstance(auth, tuple) else None,
        )


def chosen(response: httpx.Response) -> list[str]:
    """The image digests a served index holds."""
    assert response.status_code == 200, response.text
    return [m["digest"] for m in response.json()["manifests"]]


def admin(server: MetaHubServer, method: str, path: str, **kwargs: Any) -> Any:
    with client(server) as http:
        response = http.request(
            method, f"/api/v1{path}", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, **kwargs
        )
    assert response.status_code in (200, 201, 204), response.text
    return response.json() if response.content else None


def eventually(check: Callable[[], bool], within: float, what: str) -> float:
    """Poll `check` until it holds; the seconds that took. Fails after `within` seconds."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"{what}: still not so after {within} s")
        time.sleep(0.05)


# --- shared signing key and filtered-digest store -------------------------------------------


def test_a_token_issued_by_one_replica_is_accepted_by_the_other(cluster: Cluster) -> None:
    repository = "hpc/tokens"
    token = token_from(cluster.a, *SKY, repository)
    response = get_manifest(cluster.b, repository, "latest", token)
    assert chosen(response) == [cluster.builds["skylake"]]
    # and the other way round
    token = token_from(cluster.b, *SKY, repository)
    assert chosen(get_manifest(cluster.a, repository, "latest", token)) == [
        cluster.builds["skylake"]
    ]


def test_a_filtered_index_served_by_one_replica_is_fetched_by_digest_from_the_other(
    cluster: Cluster,
) -> None:
    repository = "hpc/digests"
    by_tag = get_manifest(cluster.a, repository, "latest", SKY)
    assert chosen(by_tag) == [cluster.builds["skylake"]]
    digest = by_tag.headers["docker-content-digest"]
    assert digest == "sha256:" + hashlib.sha256(by_tag.content).hexdigest()
    assert digest != cluster.upstream_index
    # B never resolved this tag: only the shared store knows these bytes.
    token = token_from(cluster.b, *SKY, repository)
    for method in ("HEAD", "GET"):
        with client(cluster.b) as http:
            response = http.request(
                method,
                f"/v2/{repository}/manifests/{digest}",
                headers={"accept": ACCEPT, "authorization": f"Bearer {token}"},
            )
        assert response.status_code == 200, response.text
        assert response.headers["docker-content-digest"] == digest
        assert response.headers["content-type"] == MEDIA_TYPE_IMAGE_INDEX
        assert int(response.headers["content-length"]) == len(by_tag.content)
    assert response.content == by_tag.content
    # the image it chose, by its upstream digest, from B as well
    image_response = get_manifest(cluster.b, repository, cluster.builds["skylake"], SKY)
    assert image_response.status_code == 200
    assert image_response.headers["docker-content-digest"] == cluster.builds["skylake"]


# --- management through one replica, in effect on the other ---------------------------------


def test_a_machine_type_and_credential_made_on_one_replica_work_on_the_other(
    cluster: Cluster,
) -> None:
    repository = "hpc/admin"
    admin(cluster.a, "POST", "/machine-types", json={"name": "zen", "features": ["cpu:zen3"]})
    issued = admin(cluster.a, "POST", "/machine-types/zen/credentials", json={})
    login = (issued["login"], issued["password"])
    # A loads what it wrote at once; B within its refresh interval.
    assert chosen(get_manifest(cluster.a, repository, "latest", login)) == [cluster.builds["zen2"]]
    eventually(
        lambda: get_manifest(cluster.b, repository, "latest", login).status_code == 200,
        REFRESH_INTERVAL + 3,
        "replica B accepts a credential made through replica A",
    )
    assert chosen(get_manifest(cluster.b, repository, "latest", login)) == [cluster.builds["zen2"]]
    # A change of the machine type through A changes what B serves that type.
    token = token_from(cluster.b, *login, repository)
    admin(cluster.a, "PATCH", "/machine-types/zen", json={"features": ["cpu:haswell"]})
    eventually(
        lambda: (
            chosen(get_manifest(cluster.b, repository, "latest", token))
            == [cluster.builds["haswell"]]
        ),
        REFRESH_INTERVAL + 3,
        "replica B serves the machine type as changed through replica A",
    )


def test_a_credential_revoked_on_one_replica_is_refused_by_the_other_within_5s(
    cluster: Cluster,
) -> None:
    repository = "hpc/revoke"
    admin(cluster.a, "POST", "/machine-types", json={"name": "rev", "features": ["cpu:skylake"]})
    issued = admin(cluster.a, "POST", "/machine-types/rev/credentials", json={})
    login = (issued["login"], issued["password"])
    eventually(
        lambda: get_manifest(cluster.b, repository, "latest", login).status_code == 200,
        REFRESH_INTERVAL + 3,
        "replica B accepts a credential made through replica A",
    )
    tokens = {
        "issued by A": token_from(cluster.a, *login, repository),
        "issued by B": token_from(cluster.b, *login, repository),
    }
    for token in tokens.values():
        assert chosen(get_manifest(cluster.b, repository, "latest", token)) == [
            cluster.builds["skylake"]
        ]

    revoked_at = time.monotonic()
    admin(cluster.a, "POST", f"/credentials/{issued['id']}/revoke")
    ways: dict[str, Login | str] = {"Basic": login}
    ways.update({f"a token {origin}": token for origin, token in tokens.items()})
    for what, auth in ways.items():
        # A reloads after its own change: refused at once there.
        assert get_manifest(cluster.a, repository, "latest", auth).status_code == 401, what

        def refused_by_b(auth: Login | str = auth) -> bool:
            return get_manifest(cluster.b, repository, "latest", auth).status_code == 401

        left = REVOCATION_BOUND - (time.monotonic() - revoked_at)
        eventually(
            refused_by_b,
            max(left, 0),
            f"replica B refuses {what} of a credential revoked through replica A",
        )
    assert time.monotonic() - revoked_at < REVOCATION_BOUND
    with client(cluster.b) as http:
        refused = http.get("/token", auth=login)
    assert refused.status_code == 401


# --- a real client through the load balancer ------------------------------------------------


def test_skopeo_pulls_the_right_entry_through_the_load_balancer(
    cluster: Cluster, tmp_path: Path
) -> None:
    reference = f"docker://{cluster.balancer.host}/hpc/skopeo:latest"
    creds = ":".join(SKY)
    raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds, reference)
    assert raw.returncode == 0, raw.stderr
    index = json.loads(raw.stdout)
    assert [m["digest"] for m in index["manifests"]] == [cluster.builds["skylake"]]
    # Several pulls, so that both replicas answer some of the requests.
    for attempt in range(3):
        target = tmp_path / f"copy-{attempt}"
        copied = skopeo(
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            creds,
            "--override-os=linux",
            "--override-arch=amd64",
            reference,
            f"dir:{target}",
        )
        assert copied.returncode == 0, copied.stderr
        manifest = (target / "manifest.json").read_bytes()
        assert "sha256:" + hashlib.sha256(manifest).hexdigest() == cluster.builds["skylake"]


def test_the_balancer_reaches_both_replicas_health_checks(cluster: Cluster) -> None:
    for server in (cluster.a, cluster.b, cluster.balancer):
        with client(server) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
