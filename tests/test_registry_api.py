"""The registry API against a real upstream: docker-registry with htpasswd auth.

MetaHub runs in this process (tests/support/inprocess.py); the upstream is a real server.

Expected digests are computed here with hashlib from bytes read back from the upstream directly,
never taken from MetaHub's answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support.inprocess import InProcessHub
from tests.support.oci import ACCEPT_ALL, OCI_INDEX, OCI_MANIFEST
from tests.support.push import Pusher, sha256
from tests.support.servers import RegistryServer

UPSTREAM_AUTH = ("upstream-user", "upstream-secret")
MACHINE_TYPES = [
    {
        "name": "type1",
        "login": "qnib-type1",
        "password": "qnib-type1",
        "features": ["cpu:broadwell"],
    },
    {"name": "type2", "login": "qnib-type2", "password": "qnib-type2", "features": ["cpu:skylake"]},
    {
        "name": "type3",
        "login": "qnib-type3",
        "password": "qnib-type3",
        "features": ["cpu:coffeelake"],
    },
    {
        "name": "type4",
        "login": "qnib-type4",
        "password": "qnib-type4",
        "features": ["cpu:broadwell", "nvcap:5.2"],
    },
    {"name": "power", "login": "power", "password": "power", "features": ["cpu:power9"]},
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry-api")


@pytest.fixture(scope="module")
def upstream(workdir: Path) -> Iterator[RegistryServer]:
    with RegistryServer(workdir / "upstream", htpasswd=dict([UPSTREAM_AUTH])) as registry:
        yield registry


@pytest.fixture(scope="module")
def content(upstream: RegistryServer, demo_layout: Path) -> dict[str, str]:
    """Push the demo images and a few special repositories; returns tag -> upstream digest."""
    pusher = Pusher(upstream.url, UPSTREAM_AUTH)
    digests = pusher.layout(demo_layout, "qnib/bench")
    manifest = pusher.client.get(
        f"/v2/qnib/bench/manifests/{digests['cpu-skylake']}", headers={"accept": OCI_MANIFEST}
    ).content
    blobs = [
        pusher.client.get(f"/v2/qnib/bench/blobs/{b['digest']}").content
        for b in [json.loads(manifest)["config"], *json.loads(manifest)["layers"]]
    ]
    for repository in ("only/skylake", "many/tags"):
        for blob in blobs:
            pusher.blob(repository, blob)
    # An index whose entries all need Skylake or later: nothing fits a Broadwell machine.
    pusher.manifest("only/skylake", sha256(manifest), manifest, OCI_MANIFEST)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sha256(manifest),
                    "size": len(manifest),
                    "platform": {
                        "os": "linux",
                        "architecture": "amd64",
                        "features": ["cpu:skylake"],
                    },
                }
            ],
        }
    ).encode()
    digests["only-skylake"] = pusher.manifest("only/skylake", "latest", index, OCI_INDEX)
    # Many tags, to exercise pagination.
    for number in range(12):
        pusher.manifest("many/tags", f"t{number:02d}", manifest, OCI_MANIFEST)
    pusher.close()
    return digests


def metahub_config(upstream: RegistryServer, **extra: object) -> dict[str, object]:
    return {
        "upstream": {
            "url": upstream.url,
            "username": UPSTREAM_AUTH[0],
            "password": UPSTREAM_AUTH[1],
        },
        "machine_types": MACHINE_TYPES,
        **extra,
    }


@pytest.fixture(scope="module")
def hub(workdir: Path, upstream: RegistryServer, content: dict[str, str]) -> Iterator[InProcessHub]:
    with InProcessHub(workdir / "hub", metahub_config(upstream)) as running:
        yield running


@pytest.fixture
def client(hub: InProcessHub) -> Iterator[httpx.Client]:
    with hub.client() as http:
        yield http


def direct(upstream: RegistryServer) -> httpx.Client:
    return httpx.Client(base_url=upstream.url, auth=UPSTREAM_AUTH, timeout=30)


def token(client: httpx.Client, login: str, *scopes: str) -> str:
    params = [("service", "metahub"), *[("scope", s) for s in scopes]]
    response = client.get("/token", params=params, auth=(login, login))
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}", "accept": ACCEPT_ALL}


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body["errors"][0]) == {"code", "message", "detail"}
    return str(body["errors"][0]["code"])


# -- authentication -------------------------------------------------------------------------


def test_anonymous_ping_is_challenged_with_the_token_realm(client: httpx.Client, hub: InProcessHub):
    response = client.get("/v2/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="{hub.url}/token",service="metahub"'
    )
    assert error_code(response) == "UNAUTHORIZED"


def test_token_endpoint_returns_a_jwt_for_the_asked_scope(client: httpx.Client):
    response = client.get(
        "/token",
        params={
            "service": "metahub",
            "scope": "repository:qnib/bench:pull,push",
            "account": "qnib-type1",
        },
        auth=("qnib-type1", "qnib-type1"),
    )
    assert response.status_code == 200
    body = response.json()
    assert {"token", "access_token", "expires_in", "issued_at"} <= set(body)
    assert body["token"] == body["access_token"]
    assert body["expires_in"] >= 60
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "qnib/bench", "actions": ["pull"]}]
    assert claims["mt"] == "type1"
    assert claims["aud"] == "metahub"


def test_token_endpoint_refuses_a_wrong_password(client: httpx.Client):
    response = client.get("/token", params={"service": "metahub"}, auth=("qnib-type1", "nope"))
    assert response.status_code == 401
    assert error_code(response) == "UNAUTHORIZED"


def test_token_endpoint_refuses_missing_credentials(client: httpx.Client):
    assert client.get("/token", params={"service": "metahub"}).status_code == 401


def test_oauth_password_grant(client: httpx.Client):
    response = client.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "qnib-type2",
            "password": "qnib-type2",
            "service": "metahub",
            "scope": "repository:qnib/bench:pull",
            "client_id": "test",
        },
    )
    assert response.status_code == 200
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["mt"] == "type2"
    bad = client.post(
        "/token", data={"grant_type": "password", "username": "qnib-type2", "password": "wrong"}
    )
    assert bad.status_code == 401
    refresh = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert refresh.status_code in (400, 405)
    assert error_code(refresh) == "UNSUPPORTED"


def test_ping_with_token_and_with_basic(client: httpx.Client):
    assert client.get("/v2/", headers=bearer(token(client, "qnib-type1"))).status_code == 200
    assert client.get("/v2/", auth=("qnib-type1", "qnib-type1")).status_code == 200
    assert client.get("/v2/", auth=("qnib-type1", "wrong")).status_code == 401


@pytest.mark.parametrize("header", ["Bearer not-a-jwt", "Bearer a.b.c", "Basic !!!", "Digest x=y"])
def test_garbage_authorization_is_a_401(client: httpx.Client, header: str):
    response = client.get("/v2/qnib/bench/tags/list", headers={"authorization": header})
    assert response.status_code == 401
    assert error_code(response) == "UNAUTHORIZED"
    assert 'scope="repository:qnib/bench:pull"' in response.headers["www-authenticate"]


def test_a_token_for_one_repository_does_not_open_another(client: httpx.Client):
    value = token(client, "qnib-type1", "repository:many/tags:pull")
    response = client.get("/v2/qnib/bench/manifests/latest", headers=bearer(value))
    assert response.status_code == 401
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


# -- manifests and selection ----------------------------------------------------------------

EXPECTED = {
    "qnib-type1": "cpu-broadwell",
    "qnib-type2": "cpu-skylake",
    "qnib-type3": "cpu-skylake",
    "qnib-type4": "cpu_broadwell-nvcap_52",
}


@pytest.mark.parametrize("login", sorted(EXPECTED))
def test_each_machine_type_gets_its_build(
    client: httpx.Client, content: dict[str, str], login: str
):
    response = client.get(
        "/v2/qnib/bench/manifests/latest",
        headers=bearer(token(client, login, "repository:qnib/bench:pull")),
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    assert response.headers["docker-content-digest"] == sha256(response.content)
    index = response.json()
    amd64 = [m for m in index["manifests"] if m["platform"]["architecture"] == "amd64"]
    arm64 = [m for m in index["manifests"] if m["platform"]["architecture"] == "arm64"]
    assert [m["digest"] for m in amd64] == [content[EXPECTED[login]]]
    assert len(arm64) == 1  # the generic arm64 entry is every machine's fallback on arm64
    assert response.headers["docker-content-digest"] != content["latest"]


def test_filtered_index_is_served_by_its_digest_and_head_matches_get(
    client: httpx.Client, hub: InProcessHub
):
    headers = bearer(token(client, "qnib-type2", "repository:qnib/bench:pull"))
    head = client.head("/v2/qnib/bench/manifests/latest", headers=headers)
    get = client.get("/v2/qnib/bench/manifests/latest", headers=headers)
    for name in ("docker-content-digest", "content-type", "content-length"):
        assert head.headers[name] == get.headers[name]
    digest = get.headers["docker-content-digest"]
    by_digest = client.get(f"/v2/qnib/bench/manifests/{digest}", headers=headers)
    assert by_digest.status_code == 200
    assert by_digest.content == get.content
    head_by_digest = client.head(f"/v2/qnib/bench/manifests/{digest}", headers=headers)
    assert head_by_digest.headers["content-length"] == str(len(get.content))
    assert head_by_digest.headers["docker-content-digest"] == digest


def test_filtered_digest_survives_a_restart(client: httpx.Client, hub: InProcessHub):
    headers = bearer(token(client, "qnib-type4", "repository:qnib/bench:pull"))
    served = client.get("/v2/qnib/bench/manifests/latest", headers=headers)
    digest = served.headers["docker-content-digest"]
    hub.stop()
    hub.start()
    with hub.client() as fresh:
        again = fresh.get(f"/v2/qnib/bench/manifests/{digest}", headers=headers)
    assert again.status_code == 200
    assert again.content == served.content


def test_child_manifests_and_upstream_digests_pass_through_byte_for_byte(
    client: httpx.Client, upstream: RegistryServer, content: dict[str, str]
):
    headers = bearer(token(client, "qnib-type1", "repository:qnib/bench:pull"))
    with direct(upstream) as origin:
        for tag in ("cpu-broadwell", "latest"):
            original = origin.get(f"/v2/qnib/bench/manifests/{tag}", headers={"accept": ACCEPT_ALL})
            assert sha256(original.content) == content[tag]
            ours = client.get(f"/v2/qnib/bench/manifests/{content[tag]}", headers=headers)
            assert ours.status_code == 200
            assert ours.content == original.content
            assert ours.headers["docker-content-digest"] == content[tag]
    single = client.get("/v2/qnib/bench/manifests/cpu-broadwell", headers=headers)
    assert sha256(single.content) == content["cpu-broadwell"]


def test_nothing_fits_is_a_manifest_unknown_that_names_the_features(client: httpx.Client):
    headers = bearer(token(client, "qnib-type1", "repository:only/skylake:pull"))
    response = client.get("/v2/only/skylake/manifests/latest", headers=headers)
    assert response.status_code == 404
    assert error_code(response) == "MANIFEST_UNKNOWN"
    message = response.json()["errors"][0]["message"]
    assert "cpu:broadwell" in message and "cpu:skylake" in message


def test_machine_with_foreign_cpu_gets_only_generic_entries(
    client: httpx.Client, content: dict[str, str]
):
    headers = bearer(token(client, "power", "repository:qnib/bench:pull"))
    index = client.get("/v2/qnib/bench/manifests/latest", headers=headers).json()
    amd64 = [m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "amd64"]
    assert amd64 == [content["generic"]]


# -- blobs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layer(upstream: RegistryServer, content: dict[str, str]) -> tuple[str, bytes]:
    with direct(upstream) as origin:
        manifest = origin.get(
            f"/v2/qnib/bench/manifests/{content['cpu-skylake']}", headers={"accept": OCI_MANIFEST}
        ).json()
        digest = manifest["layers"][0]["digest"]
        data = origin.get(f"/v2/qnib/bench/blobs/{digest}").content
    assert hashlib.sha256(data).hexdigest() == digest.split(":")[1]
    return digest, data


def test_blob_get_and_head(client: httpx.Client, layer: tuple[str, bytes]):
    digest, data = layer
    headers = bearer(token(client, "qnib-type1", "repository:qnib/bench:pull"))
    get = client.get(f"/v2/qnib/bench/blobs/{digest}", headers=headers)
    assert get.status_code == 200
    assert get.content == data
    head = client.head(f"/v2/qnib/bench/blobs/{digest}", headers=headers)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["docker-content-digest"] == get.headers["docker-content-digest"] == digest


@pytest.mark.parametrize(
    ("header", "window"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, None)),
        ("bytes=-50", (-50, None)),
        ("bytes=10-10", (10, 10)),
    ],
)
def test_blob_ranges(client: httpx.Client, layer: tuple[str, bytes], header: str, window: tuple):
    digest, data = layer
    headers = {**bearer(token(client, "qnib-type1", "repository:qnib/bench:pull")), "range": header}
    response = client.get(f"/v2/qnib/bench/blobs/{digest}", headers=headers)
    assert response.status_code == 206
    first, last = window
    if first < 0:
        expected, start = data[first:], len(data) + first
    else:
        expected = data[first:] if last is None else data[first : last + 1]
        start = first
    assert response.content == expected
    assert response.headers["content-range"] == (
        f"bytes {start}-{start + len(expected) - 1}/{len(data)}"
    )


def test_unsatisfiable_range_is_416(client: httpx.Client, layer: tuple[str, bytes]):
    digest, data = layer
    headers = {
        **bearer(token(client, "qnib-type1", "repository:qnib/bench:pull")),
        "range": f"bytes={len(data)}-",
    }
    response = client.get(f"/v2/qnib/bench/blobs/{digest}", headers=headers)
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(data)}"


# -- tags and referrers ---------------------------------------------------------------------


def test_tags_list_paginates_in_lexical_order(client: httpx.Client):
    headers = bearer(token(client, "qnib-type1", "repository:many/tags:pull"))
    everything = client.get("/v2/many/tags/tags/list", headers=headers).json()
    assert everything == {"name": "many/tags", "tags": [f"t{n:02d}" for n in range(12)]}
    seen: list[str] = []
    url: str | None = "/v2/many/tags/tags/list?n=5"
    pages = 0
    while url:
        page = client.get(url, headers=headers)
        assert page.status_code == 200
        seen += page.json()["tags"]
        link = page.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else None
        pages += 1
    assert seen == everything["tags"]
    assert pages == 3
    last = client.get("/v2/many/tags/tags/list?n=5&last=t09", headers=headers).json()
    assert last["tags"] == ["t10", "t11"]


@pytest.mark.parametrize("n", ["-1", "abc", "1.5"])
def test_tags_list_rejects_a_bad_n(client: httpx.Client, n: str):
    headers = bearer(token(client, "qnib-type1", "repository:many/tags:pull"))
    response = client.get(f"/v2/many/tags/tags/list?n={n}", headers=headers)
    assert response.status_code == 400
    assert error_code(response) == "PAGINATION_NUMBER_INVALID"


def test_referrers_is_an_empty_index_when_upstream_has_no_api(
    client: httpx.Client, content: dict[str, str]
):
    headers = bearer(token(client, "qnib-type1", "repository:qnib/bench:pull"))
    response = client.get(f"/v2/qnib/bench/referrers/{content['latest']}", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    assert response.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    filtered = client.get(
        f"/v2/qnib/bench/referrers/{content['latest']}?artifactType=application/x-sbom",
        headers=headers,
    )
    assert filtered.headers["oci-filters-applied"] == "artifactType"


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/Qnib/bench/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/qnib//bench/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/qnib/bench-/tags/list", 400, "NAME_INVALID"),
        ("/v2/qnib/bench/manifests/-bad", 400, "TAG_INVALID"),
        ("/v2/qnib/bench/manifests/" + "t" * 129, 400, "TAG_INVALID"),
        ("/v2/qnib/bench/manifests/sha256:1234", 400, "DIGEST_INVALID"),
        ("/v2/qnib/bench/manifests/md5:" + "0" * 32, 400, "DIGEST_INVALID"),
        ("/v2/qnib/bench/blobs/latest", 400, "DIGEST_INVALID"),
        ("/v2/qnib/bench/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
        ("/v2/qnib/bench/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN"),
        ("/v2/qnib/bench/manifests/sha256:" + "0" * 64, 404, "MANIFEST_UNKNOWN"),
        ("/v2/qnib/bench/blobs/sha256:" + "0" * 64, 404, "BLOB_UNKNOWN"),
        ("/v2/no/such/repo/manifests/latest", 404, "MANIFEST_UNKNOWN"),
        ("/v2/qnib/bench/nonsense", 404, "NOT_FOUND"),
    ],
)
def test_bad_requests_get_registry_errors(client: httpx.Client, path: str, status: int, code: str):
    response = client.get(path, auth=("qnib-type1", "qnib-type1"))
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v2/qnib/bench/manifests/latest"),
        ("DELETE", "/v2/qnib/bench/manifests/latest"),
        ("POST", "/v2/qnib/bench/blobs/uploads/"),
        ("PATCH", "/v2/qnib/bench/blobs/uploads/abc"),
        ("DELETE", "/v2/qnib/bench/blobs/sha256:" + "0" * 64),
    ],
)
def test_writes_are_unsupported(client: httpx.Client, method: str, path: str):
    response = client.request(method, path, auth=("qnib-type1", "qnib-type1"), content=b"{}")
    assert response.status_code == 405
    assert error_code(response) == "UNSUPPORTED"


def test_unknown_paths_outside_the_api_are_json_404s(client: httpx.Client):
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert error_code(response) == "NOT_FOUND"


# -- anonymous access and upstream trouble ---------------------------------------------------


def test_anonymous_as_a_machine_type(
    tmp_path: Path, upstream: RegistryServer, content: dict[str, str]
):
    config = metahub_config(upstream, anonymous={"machine_type": "type2"})
    with InProcessHub(tmp_path, config) as hub, hub.client() as http:
        index = http.get("/v2/qnib/bench/manifests/latest", headers={"accept": ACCEPT_ALL})
        assert index.status_code == 200
        amd64 = [
            m["digest"]
            for m in index.json()["manifests"]
            if m["platform"]["architecture"] == "amd64"
        ]
        assert amd64 == [content["cpu-skylake"]]
        issued = http.get("/token", params={"scope": "repository:qnib/bench:pull"})
        assert issued.status_code == 200


def test_anonymous_unfiltered_gets_the_upstream_index(
    tmp_path: Path, upstream: RegistryServer, content: dict[str, str]
):
    config = metahub_config(upstream, anonymous={"unfiltered": True})
    with InProcessHub(tmp_path, config) as hub, hub.client() as http:
        index = http.get("/v2/qnib/bench/manifests/latest", headers={"accept": ACCEPT_ALL})
        assert index.status_code == 200
        assert sha256(index.content) == content["latest"]


def test_wrong_upstream_credentials_are_a_502_naming_the_upstream(
    tmp_path: Path, upstream: RegistryServer, content: dict[str, str]
):
    config = metahub_config(upstream)
    config["upstream"] = {"url": upstream.url, "username": "upstream-user", "password": "bad"}
    with InProcessHub(tmp_path, config) as hub, hub.client() as http:
        response = http.get("/v2/qnib/bench/manifests/latest", auth=("qnib-type1", "qnib-type1"))
    assert response.status_code == 502
    assert upstream.url in response.json()["errors"][0]["message"]


def test_unreachable_upstream_is_a_503_naming_it(tmp_path: Path):
    dead = "http://127.0.0.1:9"  # discard port: nothing listens on loopback there
    config = {"upstream": {"url": dead}, "machine_types": MACHINE_TYPES}
    with InProcessHub(tmp_path, config) as hub, hub.client() as http:
        response = http.get("/v2/qnib/bench/manifests/latest", auth=("qnib-type1", "qnib-type1"))
    assert response.status_code == 503
    assert dead in response.json()["errors"][0]["message"]


def test_basic_auth_header_is_checked_on_every_request(client: httpx.Client):
    encoded = base64.b64encode(b"qnib-type1:qnib-type1").decode()
    response = client.get("/v2/qnib/bench/tags/list", headers={"authorization": f"Basic {encoded}"})
    assert response.status_code == 200
