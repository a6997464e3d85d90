"""Several upstreams behind one MetaHub, each a real docker-registry: routing by `ns`, by path
prefix and to the default, and nothing shared between two registries' repositories.

The setup (tests/support/mirror.py) lists, first in each index, a build machine type `node`
must not get; expected digests come from the registries themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml

from tests.support.mirror import ADMIN_TOKEN, DOWN, GHCR_ONLY, NODE, Mirror, mirror
from tests.support.oci import ACCEPT_ALL
from tests.support.registry_log import metahub_requests
from tests.support.scrape import scrape, value

GHCR, LAB, HUB = "ghcr.io", "registry.lab:5000", "docker.io"
REGISTRIES = [HUB, GHCR, LAB, DOWN]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    with mirror(tmp_path_factory.mktemp("mirror")) as running:
        yield running


@pytest.fixture(scope="module")
def http(setup: Mirror) -> Iterator[httpx.Client]:
    headers = {"accept": ACCEPT_ALL}
    with httpx.Client(base_url=setup.hub.url, auth=NODE, headers=headers, timeout=30) as client:
        yield client


def amd64(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [
        m["digest"]
        for m in response.json()["manifests"]
        if m.get("platform", {}).get("architecture") == "amd64"
    ]


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    (error,) = response.json()["errors"]
    assert error["code"] == code
    return error  # type: ignore[no-any-return]


def all_asked(setup: Mirror) -> int:
    return sum(len(metahub_requests(server)) for server in setup.upstreams.values())


# -- the three ways to a registry ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "registry"),
    [
        ("/v2/acme/app/manifests/1.0?ns=ghcr.io", GHCR),
        ("/v2/acme/app/manifests/1.0?ns=registry.lab%3A5000", LAB),  # as containerd encodes it
        ("/v2/acme/app/manifests/1.0?ns=registry.lab:5000", LAB),
        ("/v2/library/app/manifests/1.0?ns=docker.io", HUB),
        ("/v2/ghcr.io/acme/app/manifests/1.0", GHCR),
        ("/v2/lab/acme/app/manifests/1.0", LAB),
        ("/v2/docker.io/library/app/manifests/1.0", HUB),
        ("/v2/library/app/manifests/1.0", HUB),
    ],
)
def test_each_way_reaches_its_registry_and_filters(
    setup: Mirror, http: httpx.Client, path: str, registry: str
):
    image = setup.images[registry]
    assert amd64(http.get(path)) == [image.chosen]


@pytest.mark.parametrize(
    ("path", "ns"),
    [
        ("/v2/app/manifests/1.0", None),
        ("/v2/docker.io/app/manifests/1.0", None),
        ("/v2/app/manifests/1.0", "docker.io"),
        ("/v2/app/manifests/1.0", "index.docker.io"),
    ],
)
def test_docker_hub_one_part_names_are_library_however_they_arrive(
    setup: Mirror, http: httpx.Client, path: str, ns: str | None
):
    response = http.get(path, params={"ns": ns} if ns else None)
    assert amd64(response) == [setup.images[HUB].chosen]


def test_the_same_repository_on_two_registries_shares_nothing(setup: Mirror, http: httpx.Client):
    ghcr, lab = setup.images[GHCR], setup.images[LAB]
    assert ghcr.chosen != lab.chosen  # the builds print their registry
    # Alternating, so a cache keyed by repository alone would hand one the other's answer.
    answers = [
        http.get("/v2/acme/app/manifests/1.0", params={"ns": ns}) for ns in (GHCR, LAB, GHCR, LAB)
    ]
    assert [amd64(a) for a in answers] == [[ghcr.chosen], [lab.chosen]] * 2
    ghcr_digest = answers[0].headers["docker-content-digest"]
    lab_digest = answers[1].headers["docker-content-digest"]
    assert ghcr_digest == "sha256:" + hashlib.sha256(answers[0].content).hexdigest()
    assert ghcr_digest != lab_digest
    # A filtered digest is found under its own registry, by ns or by prefix...
    for path in (
        f"/v2/acme/app/manifests/{ghcr_digest}?ns=ghcr.io",
        f"/v2/ghcr.io/acme/app/manifests/{ghcr_digest}",
    ):
        by_digest = http.get(path)
        assert by_digest.status_code == 200
        assert by_digest.content == answers[0].content
    # ...and never under the other's.
    elsewhere = http.get(f"/v2/acme/app/manifests/{ghcr_digest}", params={"ns": LAB})
    error_of(elsewhere, 404, "MANIFEST_UNKNOWN")
    # Each upstream index, unfiltered by digest, from its own registry only.
    index = http.get(f"/v2/acme/app/manifests/{lab.index}?ns={LAB}")
    assert index.status_code == 200
    assert "sha256:" + hashlib.sha256(index.content).hexdigest() == lab.index


def test_blobs_come_from_the_registry_routed_to(setup: Mirror, http: httpx.Client):
    ghcr = setup.images[GHCR]
    manifest = http.get(f"/v2/ghcr.io/acme/app/manifests/{ghcr.chosen}")
    assert manifest.status_code == 200
    layer = json.loads(manifest.content)["layers"][0]["digest"]
    blob = http.get(f"/v2/acme/app/blobs/{layer}", params={"ns": GHCR})
    assert blob.status_code == 200
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer
    assert http.head(f"/v2/ghcr.io/acme/app/blobs/{layer}").status_code == 200
    # registry.lab:5000's acme/app holds other builds: not this layer.
    error_of(http.get(f"/v2/lab/acme/app/blobs/{layer}"), 404, "BLOB_UNKNOWN")


@pytest.mark.parametrize(
    "path", ["/v2/vapp/manifests/1.0", "/v2/docker.io/library/vapp/manifests/1.0"]
)
def test_virtual_images_are_the_default_upstreams(setup: Mirror, http: httpx.Client, path: str):
    assert amd64(http.get(path)) == [setup.images[HUB].chosen]


def test_virtual_images_are_not_other_registries(http: httpx.Client):
    response = http.get("/v2/vapp/manifests/1.0", params={"ns": LAB})
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")


def test_tags_pages_keep_their_registry(http: httpx.Client):
    first = http.get("/v2/acme/app/tags/list", params={"ns": LAB, "n": 1})
    assert first.status_code == 200
    assert first.json() == {"name": "acme/app", "tags": ["1.0"]}
    link = first.headers["link"]
    assert link == '</v2/acme/app/tags/list?n=1&last=1.0&ns=registry.lab%3A5000>; rel="next"'
    second = http.get(link[1 : link.index(">")])
    assert second.json()["tags"] == ["broadwell"]  # registry.lab:5000's, n=1 again
    assert "&ns=registry.lab%3A5000>" in second.headers["link"]
    prefixed = http.get("/v2/ghcr.io/acme/app/tags/list")
    assert prefixed.json() == {
        "name": "ghcr.io/acme/app",
        "tags": ["1.0", "broadwell", "generic", "icelake"],
    }


# -- names no upstream has ----------------------------------------------------------------


@pytest.mark.parametrize(
    "ns",
    ["quay.io", "registry.lab", "registry.lab%3A5001", "ghcr.io%2Facme", "%00", "ghcr.io%0A"],
)
def test_an_unknown_ns_is_name_unknown_at_once(setup: Mirror, ns: str):
    before = all_asked(setup)
    # No credentials either: containerd must be able to move on to its next host.
    with httpx.Client(base_url=setup.hub.url, timeout=30) as anonymous:
        response = anonymous.get(f"/v2/acme/app/manifests/1.0?ns={ns}")
    error = error_of(response, 404, "NAME_UNKNOWN")
    for registry in REGISTRIES:
        assert registry in error["message"]
    assert error["detail"]["registries"] == REGISTRIES
    assert all_asked(setup) == before


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/ghcr.io/manifests/1.0", 404, "NAME_UNKNOWN"),
        ("/v2/lab/tags/list", 404, "NAME_UNKNOWN"),
        ("/v2/ghcr.io/", 404, "NOT_FOUND"),
        ("/v2/ghcr.io/blobs/sha256:" + "0" * 64, 404, "NAME_UNKNOWN"),
        ("/v2/GHCR.io/acme/app/manifests/1.0", 400, "NAME_INVALID"),
    ],
)
def test_a_prefix_without_a_repository_is_an_error(
    setup: Mirror, http: httpx.Client, path: str, status: int, code: str
):
    before = all_asked(setup)
    error_of(http.get(path), status, code)
    assert all_asked(setup) == before


def test_a_repository_missing_upstream_is_that_registrys_404(http: httpx.Client):
    error = error_of(http.get("/v2/ghcr.io/acme/nothing/manifests/1.0"), 404, "MANIFEST_UNKNOWN")
    assert "ghcr.io" in error["message"]


def test_upstream_trouble_names_the_registry(http: httpx.Client):
    response = http.get("/v2/acme/app/manifests/1.0", params={"ns": DOWN})
    assert response.status_code in (502, 503, 504), response.text
    (error,) = response.json()["errors"]
    assert DOWN in error["message"]


def test_ready_while_some_upstream_answers(setup: Mirror):
    ready = httpx.get(f"{setup.hub.url}/readyz", timeout=30)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


# -- per-repository access across registries ----------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/v2/acme/app/manifests/1.0?ns=ghcr.io", "/v2/ghcr.io/acme/app/manifests/1.0"],
)
def test_a_limited_type_pulls_its_registry_by_ns_and_by_prefix(setup: Mirror, path: str):
    with httpx.Client(base_url=setup.hub.url, auth=GHCR_ONLY, timeout=30) as client:
        response = client.get(path, headers={"accept": ACCEPT_ALL})
    assert amd64(response) == [setup.images[GHCR].chosen]


@pytest.mark.parametrize(
    ("path", "qualified"),
    [
        # The same repository name as the allowed one, on another registry.
        ("/v2/acme/app/manifests/1.0?ns=registry.lab%3A5000", "registry.lab:5000/acme/app"),
        ("/v2/lab/acme/app/manifests/1.0", "registry.lab:5000/acme/app"),
        ("/v2/library/app/manifests/1.0?ns=docker.io", "docker.io/library/app"),
        ("/v2/app/manifests/1.0", "docker.io/library/app"),  # the default upstream
        (
            "/v2/acme/app/blobs/sha256:" + "0" * 64 + "?ns=registry.lab:5000",
            "registry.lab:5000/acme/app",
        ),
    ],
)
def test_a_limited_type_is_denied_other_registries_whichever_way_it_asks(
    setup: Mirror, path: str, qualified: str
):
    before = all_asked(setup)
    with httpx.Client(base_url=setup.hub.url, auth=GHCR_ONLY, timeout=30) as client:
        response = client.get(path, headers={"accept": ACCEPT_ALL})
    error = error_of(response, 403, "DENIED")
    assert qualified in error["message"] and "ghcr-only" in error["message"]
    assert "ghcr.io/acme/**" not in response.text  # its patterns are not told
    assert all_asked(setup) == before  # refused before any upstream is asked


@pytest.mark.parametrize(
    ("params", "granted"),
    [
        ({"ns": "ghcr.io", "scope": "repository:acme/app:pull"}, ["acme/app"]),
        ({"scope": "repository:ghcr.io/acme/app:pull"}, ["ghcr.io/acme/app"]),
        ({"ns": "registry.lab:5000", "scope": "repository:acme/app:pull"}, []),
        ({"scope": "repository:lab/acme/app:pull"}, []),
        ({"scope": "repository:app:pull"}, []),
        ({"ns": "quay.io", "scope": "repository:acme/app:pull"}, []),  # not mirrored
    ],
)
def test_a_limited_types_token_grants_only_its_registrys_repositories(
    setup: Mirror, params: dict[str, str], granted: list[str]
):
    with httpx.Client(base_url=setup.hub.url, timeout=30) as client:
        issued = client.get("/token", params={"service": "metahub", **params}, auth=GHCR_ONLY)
    assert issued.status_code == 200, issued.text
    claims = jwt.decode(issued.json()["token"], options={"verify_signature": False})
    assert [grant["name"] for grant in claims["access"]] == granted


def _token(setup: Mirror, auth: tuple[str, str], scope: str, ns: str | None = None) -> str:
    params = {"service": "metahub", "scope": scope, **({"ns": ns} if ns else {})}
    issued = httpx.get(f"{setup.hub.url}/token", params=params, auth=auth, timeout=30)
    assert issued.status_code == 200, issued.text
    return str(issued.json()["token"])


def test_warm_pulls_with_a_token_keep_their_registry_and_are_counted(setup: Mirror):
    """Repeated Bearer pulls are answered from memory (server.fast_path): still routed by ns,
    and counted by machine type and outcome as any pull by tag."""
    ghcr = _token(setup, GHCR_ONLY, "repository:acme/app:pull", GHCR)
    node = _token(setup, NODE, "repository:acme/app:pull", LAB)
    before = scrape(setup.hub.url)
    with httpx.Client(base_url=setup.hub.url, timeout=30) as client:
        for _ in range(3):
            for token, ns, registry in ((ghcr, GHCR, GHCR), (node, LAB, LAB)):
                response = client.get(
                    "/v2/acme/app/manifests/1.0",
                    params={"ns": ns},
                    headers={"authorization": f"Bearer {token}", "accept": ACCEPT_ALL},
                )
                assert amd64(response) == [setup.images[registry].chosen]
    after = scrape(setup.hub.url)
    for machine_type in ("ghcr-only", "node"):
        labels = {"machine_type": machine_type, "outcome": "matched"}
        assert value(after, "metahub_manifest_pulls_total", **labels) == (
            value(before, "metahub_manifest_pulls_total", **labels) + 3
        )


def test_a_warm_digest_is_not_served_to_a_type_outside_its_patterns(setup: Mirror):
    """A token for `acme/app` (granted through ns=ghcr.io) names the same path as the lab
    registry's repository: the patterns, not the token, keep it out, from memory too."""
    lab = setup.images[LAB]
    path = f"/v2/acme/app/manifests/{lab.index}?ns=registry.lab%3A5000"
    token = _token(setup, GHCR_ONLY, "repository:acme/app:pull", GHCR)
    with httpx.Client(base_url=setup.hub.url, timeout=30) as client:
        for _ in range(2):  # the node's pulls put the digest in memory
            assert client.get(path, auth=NODE, headers={"accept": ACCEPT_ALL}).status_code == 200
        for _ in range(2):
            denied = client.get(
                path, headers={"authorization": f"Bearer {token}", "accept": ACCEPT_ALL}
            )
            error = error_of(denied, 403, "DENIED")
            assert "registry.lab:5000/acme/app" in error["message"]


# -- tokens, explain, metrics, access log -------------------------------------------------


def test_a_token_for_the_prefixed_path_pulls_it(setup: Mirror):
    with httpx.Client(base_url=setup.hub.url, timeout=30) as client:
        issued = client.get(
            "/token",
            params={"service": "metahub", "scope": "repository:ghcr.io/acme/app:pull"},
            auth=NODE,
        )
        assert issued.status_code == 200, issued.text
        bearer = {"authorization": f"Bearer {issued.json()['token']}", "accept": ACCEPT_ALL}
        pulled = client.get("/v2/ghcr.io/acme/app/manifests/1.0", headers=bearer)
        assert amd64(pulled) == [setup.images[GHCR].chosen]
        other = client.get("/v2/lab/acme/app/manifests/1.0", headers=bearer)
        assert other.status_code == 401
        assert 'scope="repository:lab/acme/app:pull"' in other.headers["www-authenticate"]


def test_the_challenge_of_an_ns_request_sends_the_token_request_there_too(setup: Mirror):
    with httpx.Client(base_url=setup.hub.url, timeout=30) as anonymous:
        challenged = anonymous.get("/v2/acme/app/manifests/1.0?ns=registry.lab%3A5000")
        plain = anonymous.get("/v2/lab/acme/app/manifests/1.0")
    assert challenged.status_code == plain.status_code == 401
    realm = f"{setup.hub.url}/token"
    assert challenged.headers["www-authenticate"] == (
        f'Bearer realm="{realm}?ns=registry.lab%3A5000",service="metahub",'
        'scope="repository:acme/app:pull"'
    )
    assert plain.headers["www-authenticate"] == (
        f'Bearer realm="{realm}",service="metahub",scope="repository:lab/acme/app:pull"'
    )


@pytest.mark.parametrize(
    ("params", "registry", "repository"),
    [
        ({"image": "ghcr.io/acme/app:1.0"}, GHCR, "acme/app"),
        ({"image": "acme/app:1.0", "registry": LAB}, LAB, "acme/app"),
        ({"image": "app:1.0"}, HUB, "library/app"),
    ],
)
def test_explain_names_the_registry(
    setup: Mirror, params: dict[str, str], registry: str, repository: str
):
    response = httpx.get(
        f"{setup.hub.url}/api/v1/explain",
        params={**params, "machine_type": "node"},
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["registry"], body["repository"]) == (registry, repository)
    assert body["upstream"]["digest"] == setup.images[registry].index
    chosen = [e["digest"] for e in body["entries"] if e["chosen"]]
    assert chosen == [setup.images[registry].chosen]


def test_explain_of_an_unknown_registry_is_name_unknown(setup: Mirror):
    response = httpx.get(
        f"{setup.hub.url}/api/v1/explain",
        params={"image": "acme/app:1.0", "registry": "quay.io", "machine_type": "node"},
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    error_of(response, 404, "NAME_UNKNOWN")


def test_metrics_and_the_access_log_name_the_upstream(setup: Mirror, http: httpx.Client):
    before = scrape(setup.hub.url)
    marker = "/v2/lab/acme/app/manifests/broadwell"
    assert http.get(marker).status_code == 200
    after = scrape(setup.hub.url)
    labels = {"upstream": LAB, "method": "GET", "outcome": "200"}
    assert value(after, "metahub_upstream_requests_total", **labels) == (
        value(before, "metahub_upstream_requests_total", **labels) + 1
    )
    other = {**labels, "upstream": GHCR}
    assert value(after, "metahub_upstream_requests_total", **other) == value(
        before, "metahub_upstream_requests_total", **other
    )
    line = _logged(setup.hub.log_path, marker)
    assert line.endswith(f" upstream={LAB}")


def _logged(log: Path, path: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text().splitlines() if f'"GET {path}"' in line]
        if lines:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError(f"{path} was not logged")


@pytest.mark.parametrize(
    ("args", "registry"),
    [(["--registry", "registry.lab:5000", "acme/app:1.0"], LAB), (["ghcr.io/acme/app:1.0"], GHCR)],
)
def test_the_explain_command_names_the_registry(
    setup: Mirror, tmp_path: Path, args: list[str], registry: str
):
    # Its own data directory: the command opens the database itself.
    config = {**setup.hub.config, "data_dir": str(tmp_path / "data")}
    path = tmp_path / "metahub.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "metahub", "explain", "--config", str(path)]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "--machine-type", "node", *extra, *args],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
            timeout=120,
            check=False,
        )

    shown = run()
    assert shown.returncode == 0, shown.stderr
    assert f"({registry}/acme/app)" in shown.stdout.splitlines()[0]
    as_json = run("--json")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert (body["registry"], body["repository"]) == (registry, "acme/app")
    assert [e["digest"] for e in body["entries"] if e["chosen"]] == [setup.images[registry].chosen]
    refused = subprocess.run(
        [*command, "--machine-type", "node", "--registry", "quay.io", "acme/app:1.0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0
    assert "quay.io" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_coverage_names_each_registry_as_a_prefixed_pull_does(setup: Mirror):
    images = ["ghcr.io/acme/app:1.0", "lab/acme/app:1.0", "app:1.0"]
    response = httpx.get(
        f"{setup.hub.url}/api/v1/coverage",
        params=[("image", image) for image in images] + [("machine_type", "node")],
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    rows = response.json()["images"]
    assert [row["image"] for row in rows] == images
    for row, registry in zip(rows, (GHCR, LAB, HUB), strict=True):
        expected = setup.images[registry]
        assert row["digest"] == expected.index  # that registry's own index
        (cell,) = row["machine_types"]
        assert cell["outcome"] == "matched"
        assert [e["digest"] for e in cell["entries"] if e["platform"] == "linux/amd64"] == [
            expected.chosen
        ]
    unknown = httpx.get(
        f"{setup.hub.url}/api/v1/coverage",
        params={"image": "nowhere/acme/app:1.0"},
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    # No prefix `nowhere`: the default upstream, which has no such repository.
    assert unknown.status_code == 404, unknown.text
