"""The explain API of the app `metahub serve` runs (in process), and the `metahub explain` command.

The upstream is the demo's OCI layout (qnib/bench:latest: amd64 cpu:broadwell, amd64 cpu:skylake,
amd64 generic, amd64 cpu:broadwell+nvcap:5.2, arm64 generic). Expected entries, digests and
platforms are read from the layout's own files; expected choices are the product's seed table.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.inprocess import InProcessHub
from tests.support.metahub_server import MetaHubServer
from tests.support.oci import ACCEPT_ALL, OCI_INDEX, sha256

ADMIN_TOKEN = "admin-token-for-tests-0001"
HASHED_ADMIN_TOKEN = "second-admin-token-0002"
MACHINE_TYPES = [
    {"name": "type1", "login": "qnib-type1", "password": "pw1", "features": ["cpu:broadwell"]},
    {"name": "type2", "login": "qnib-type2", "password": "pw2", "features": ["cpu:skylake"]},
    {"name": "type3", "login": "qnib-type3", "password": "pw3", "features": ["cpu:coffeelake"]},
    {
        "name": "type4",
        "login": "qnib-type4",
        "password": "pw4",
        "features": ["cpu:broadwell", "nvcap:5.2"],
    },
]
LOGINS = {m["name"]: (m["login"], m["password"]) for m in MACHINE_TYPES}
# The seed table: which amd64 entry (by position in the index) each machine type gets.
SEED_CHOICE = {"type1": 0, "type2": 1, "type3": 1, "type4": 3}
ARM64_POSITION = 4
IMAGE = "qnib/bench:latest"


def basic(name: str) -> str:
    login, password = LOGINS[name]
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def platform_text(platform: dict[str, str]) -> str:
    parts = [platform["os"], platform["architecture"]]
    if platform.get("variant"):
        parts.append(platform["variant"])
    return "/".join(parts)


class Upstream:
    """What the layout holds, read from its files."""

    def __init__(self, path: Path) -> None:
        refs = {
            d["annotations"]["org.opencontainers.image.ref.name"]: d
            for d in json.loads((path / "index.json").read_bytes())["manifests"]
        }
        self.index_digest = refs[IMAGE]["digest"]
        self.index_bytes = self.blob(path, self.index_digest)
        assert sha256(self.index_bytes) == self.index_digest
        self.entries: list[dict[str, Any]] = json.loads(self.index_bytes)["manifests"]

    @staticmethod
    def blob(path: Path, digest: str) -> bytes:
        return (path / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("explain")


@pytest.fixture(scope="module")
def layout(demo_layout: Path) -> Path:
    return demo_layout


@pytest.fixture(scope="module")
def upstream(layout: Path) -> Upstream:
    found = Upstream(layout)
    # The premise of every test here: the demo's five entries, in this order.
    assert [
        (platform_text(e["platform"]), e["platform"].get("features", [])) for e in found.entries
    ] == [
        ("linux/amd64", ["cpu:broadwell"]),
        ("linux/amd64", ["cpu:skylake"]),
        ("linux/amd64", []),
        ("linux/amd64", ["cpu:broadwell", "nvcap:5.2"]),
        ("linux/arm64/v8", []),
    ]
    return found


def config(layout: Path, data_dir: Path) -> dict[str, Any]:
    return {
        "upstream": {"path": str(layout)},
        "data_dir": str(data_dir),
        "machine_types": MACHINE_TYPES,
        "admin": {
            "tokens": [
                ADMIN_TOKEN,
                "sha256:" + hashlib.sha256(HASHED_ADMIN_TOKEN.encode()).hexdigest(),
            ]
        },
    }


@pytest.fixture(scope="module")
def hub(workdir: Path, layout: Path) -> Iterator[InProcessHub]:
    hub_dir = workdir / "hub"
    with InProcessHub(hub_dir, config(layout, hub_dir / "data")) as running:
        yield running


@pytest.fixture(scope="module")
def client(hub: InProcessHub) -> Iterator[httpx.Client]:
    with hub.client() as http:
        yield http


@pytest.fixture(scope="module")
def cli_config(workdir: Path, layout: Path) -> Path:
    path = workdir / "cli.yaml"
    path.write_text(yaml.safe_dump(config(layout, workdir / "cli-data")))
    return path


def explain(
    client: httpx.Client, image: str = IMAGE, machine_type: str = "type1", **headers: str
) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}", **headers}
    return client.get(
        "/api/v1/explain",
        params={"image": image, "machine_type": machine_type},
        headers={k: v for k, v in headers.items() if v},
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    (error,) = response.json()["errors"]
    return dict(error)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metahub", "explain", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        timeout=60,
        check=False,
    )


# --- the API's answer --------------------------------------------------------------------------


def test_explanation_shape_and_values(client: httpx.Client, upstream: Upstream) -> None:
    response = explain(client, machine_type="type1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == IMAGE
    assert body["machine_type"] == {
        "name": "type1",
        "features": ["cpu:broadwell"],
        "mode": "best",
        "platforms": [],
    }
    assert body["upstream"] == {"digest": upstream.index_digest, "media_type": OCI_INDEX}
    assert body["filtered"] is True
    assert body["error"] is None
    entries = body["entries"]
    assert len(entries) == len(upstream.entries) == 5
    for position, (entry, source) in enumerate(zip(entries, upstream.entries, strict=True)):
        assert entry["position"] == position
        assert entry["digest"] == source["digest"]
        assert entry["media_type"] == source["mediaType"]
        assert entry["platform"] == platform_text(source["platform"])
        assert entry["features"] == source["platform"].get("features", [])
    assert [e["fits"] for e in entries] == [True, False, True, False, True]
    assert [e["chosen"] for e in entries] == [True, False, False, False, True]
    # features of the entry the machine satisfies: entry 3's cpu:broadwell, not its nvcap:5.2
    assert [e["score"]["satisfied"] for e in entries] == [1, 0, 0, 1, 0]
    assert entries[0]["score"]["distance"] == 0
    assert entries[0]["why_not"] == [] and entries[4]["why_not"] == []
    skylake = " ".join(entries[1]["why_not"])
    assert "cpu:skylake" in skylake and "cpu:broadwell" in skylake
    nvcap = " ".join(entries[3]["why_not"])
    assert "nvcap" in nvcap and "cpu:" not in nvcap  # only the GPU requirement failed
    assert entries[2]["why_not"]  # fits, but loses to a better entry: that is said too
    assert body["nested"] == {}


@pytest.mark.parametrize("machine_type", sorted(SEED_CHOICE))
def test_served_digest_is_what_the_registry_serves(
    client: httpx.Client, upstream: Upstream, machine_type: str
) -> None:
    body = explain(client, machine_type=machine_type).json()
    chosen = [e["position"] for e in body["entries"] if e["chosen"]]
    assert chosen == [SEED_CHOICE[machine_type], ARM64_POSITION]
    pulled = client.get(
        "/v2/qnib/bench/manifests/latest",
        headers={"authorization": basic(machine_type), "accept": ACCEPT_ALL},
    )
    assert pulled.status_code == 200, pulled.text
    assert (
        pulled.headers["docker-content-digest"] == body["served_digest"] == sha256(pulled.content)
    )
    assert [d["digest"] for d in json.loads(pulled.content)["manifests"]] == [
        upstream.entries[p]["digest"] for p in chosen
    ]


def test_explain_by_digest_matches_by_tag(client: httpx.Client, upstream: Upstream) -> None:
    by_tag = explain(client, machine_type="type2").json()
    by_digest = explain(client, f"qnib/bench@{upstream.index_digest}", "type2").json()
    assert by_digest["entries"] == by_tag["entries"]
    assert by_digest["served_digest"] == by_tag["served_digest"]


def test_explain_scores_closeness(client: httpx.Client) -> None:
    entries = explain(client, machine_type="type2").json()["entries"]
    broadwell, skylake = entries[0], entries[1]
    assert broadwell["fits"] and skylake["fits"]
    assert broadwell["score"]["satisfied"] == skylake["score"]["satisfied"] == 1
    assert skylake["score"]["distance"] < broadwell["score"]["distance"]
    assert skylake["chosen"] and not broadwell["chosen"]


def test_hashed_admin_token_opens_the_api(client: httpx.Client) -> None:
    response = explain(client, authorization=f"Bearer {HASHED_ADMIN_TOKEN}")
    assert response.status_code == 200, response.text


# --- who may ask -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    ["", f"Bearer {ADMIN_TOKEN}x", "Bearer wrong-token-0000", f"Basic {ADMIN_TOKEN}", "Bearer"],
)
def test_admin_token_required(client: httpx.Client, authorization: str) -> None:
    response = client.get(
        "/api/v1/explain",
        params={"image": IMAGE, "machine_type": "type1"},
        headers={"authorization": authorization} if authorization else {},
    )
    assert response.status_code == 401
    assert error_of(response)["code"] == "UNAUTHORIZED"


def test_registry_credentials_do_not_open_the_api(client: httpx.Client) -> None:
    response = explain(client, authorization=basic("type1"))
    assert response.status_code == 401
    token_response = client.get(
        "/token",
        params={"service": "metahub", "scope": "repository:qnib/bench:pull"},
        headers={"authorization": basic("type1")},
    )
    assert token_response.status_code == 200, token_response.text
    token = token_response.json()["token"]
    # the token is good for the registry ...
    pulled = client.get(
        "/v2/qnib/bench/manifests/latest",
        headers={"authorization": f"Bearer {token}", "accept": ACCEPT_ALL},
    )
    assert pulled.status_code == 200
    # ... and not for the management API
    response = explain(client, authorization=f"Bearer {token}")
    assert response.status_code == 401
    assert error_of(response)["code"] == "UNAUTHORIZED"


# --- bad requests ------------------------------------------------------------------------------


def test_unknown_machine_type(client: httpx.Client) -> None:
    response = explain(client, machine_type="no-such-type")
    assert response.status_code == 404
    assert "no-such-type" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("image", "code"),
    [
        ("Qnib/Bench:latest", "NAME_INVALID"),
        ("qnib//bench:latest", "NAME_INVALID"),
        ("qnib/bench:-bad", "TAG_INVALID"),
        ("qnib/bench:" + "t" * 129, "TAG_INVALID"),
        ("qnib/bench@sha256:1234", "DIGEST_INVALID"),
        ("qnib/bench@sha256:" + "Z" * 64, "DIGEST_INVALID"),
    ],
)
def test_bad_image_reference(client: httpx.Client, image: str, code: str) -> None:
    response = explain(client, image=image)
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == code


@pytest.mark.parametrize("missing", ["image", "machine_type"])
def test_missing_query_parameter(client: httpx.Client, missing: str) -> None:
    params = {"image": IMAGE, "machine_type": "type1"}
    del params[missing]
    response = client.get(
        "/api/v1/explain", params=params, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "INVALID_REQUEST"
    assert missing in error["message"]
    assert any(missing in item["field"] for item in error["detail"])


def test_unknown_tag(client: httpx.Client) -> None:
    response = explain(client, image="qnib/bench:no-such-tag")
    assert response.status_code == 404
    assert error_of(response)["code"] == "MANIFEST_UNKNOWN"


def test_openapi_lists_explain(client: httpx.Client) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert "/v1/explain" in response.json()["paths"]


# --- the log -----------------------------------------------------------------------------------


def test_served_filtered_index_is_logged(workdir: Path, layout: Path, upstream: Upstream) -> None:
    # What `metahub serve` itself writes to its log, so this one runs the real server.
    serve_dir = workdir / "serve"
    serve_dir.mkdir()
    with MetaHubServer(serve_dir, config(layout, serve_dir / "data")) as server:
        pulled = httpx.get(
            f"{server.url}/v2/qnib/bench/manifests/latest",
            headers={"authorization": basic("type3"), "accept": ACCEPT_ALL},
            timeout=30,
        )
        assert pulled.status_code == 200
        chosen = [upstream.entries[SEED_CHOICE["type3"]]["digest"], upstream.entries[4]["digest"]]
        deadline = time.monotonic() + 5
        while True:
            lines = [
                line
                for line in server.log().splitlines()
                if re.search(r"\btype3\b", line) and upstream.index_digest in line
            ]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert lines, server.log()
        assert all(digest in lines[-1] for digest in chosen), lines[-1]


# --- the command -------------------------------------------------------------------------------


def test_cli_table_names_the_choice_and_the_reasons(
    client: httpx.Client, cli_config: Path, upstream: Upstream
) -> None:
    result = run_cli("--config", str(cli_config), "--machine-type", "type1", IMAGE)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "type1" in out and IMAGE in out
    assert upstream.index_digest in out
    pulled = client.get(
        "/v2/qnib/bench/manifests/latest",
        headers={"authorization": basic("type1"), "accept": ACCEPT_ALL},
    )
    assert pulled.headers["docker-content-digest"] in out
    rows = {}
    for line in out.splitlines():
        for position, entry in enumerate(upstream.entries):
            if entry["digest"][:19] in line:
                rows[position] = line
    assert sorted(rows) == [0, 1, 2, 3, 4], out
    chosen = [p for p, line in rows.items() if "✔" in line]
    assert chosen == [0, 4], out
    for name in ("cpu:skylake", "cpu:broadwell", " no "):
        assert name in rows[1], rows[1]  # the failed feature and what the machine has
    assert "nvcap" in rows[3].split("cpu:broadwell, nvcap:5.2", 1)[1], rows[3]


def test_cli_json_matches_the_api(client: httpx.Client, cli_config: Path) -> None:
    for machine_type in ("type1", "type4"):
        result = run_cli(
            "--config", str(cli_config), "--machine-type", machine_type, "--json", IMAGE
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == explain(client, machine_type=machine_type).json()


def test_cli_unknown_machine_type(cli_config: Path) -> None:
    result = run_cli("--config", str(cli_config), "--machine-type", "no-such-type", IMAGE)
    assert result.returncode != 0
    assert "no-such-type" in result.stderr
    assert "type1" in result.stderr  # the known ones are named
    assert "Traceback" not in result.stderr + result.stdout


# --- x86-64 levels: the rule that chose ---------------------------------------------------------

LEVELS_IMAGE = "hpc/levels:latest"
LEVEL_TYPES = [
    {"name": "zen3", "login": "zen3", "password": "zen3", "features": ["cpu:zen3"]},
    {"name": "core2", "login": "core2", "password": "core2", "features": ["cpu:core2"]},
]


@pytest.fixture(scope="module")
def levels_layout(workdir: Path) -> Path:
    from metahub.demo.images import FeatureImage, build_feature_images

    path = workdir / "levels-layout"
    builds = [
        FeatureImage("v2", "x86-64-v2", (), "v2", "v2"),
        FeatureImage("v3", "x86-64-v3", (), "v3", "v3"),
        FeatureImage("base", "x86-64", (), "base"),
    ]
    build_feature_images(path, "hpc/levels", builds)
    return path


@pytest.fixture(scope="module")
def levels_config(workdir: Path, levels_layout: Path) -> dict[str, Any]:
    return {
        "upstream": {"path": str(levels_layout)},
        "data_dir": str(workdir / "levels-data"),
        "machine_types": LEVEL_TYPES,
        "admin": {"tokens": [ADMIN_TOKEN]},
    }


def test_explain_names_the_level_rule_and_the_served_platform(
    workdir: Path, levels_config: dict[str, Any]
) -> None:
    with InProcessHub(workdir / "levels-hub", levels_config) as running, running.client() as http:
        zen3 = explain(http, LEVELS_IMAGE, "zen3").json()
        core2 = explain(http, LEVELS_IMAGE, "core2").json()
    assert [(e["platform"], e["chosen"]) for e in zen3["entries"]] == [
        ("linux/amd64/v2", False),
        ("linux/amd64/v3", True),
        ("linux/amd64", False),
    ]
    v2, v3, base = zen3["entries"]
    assert v3["served_platform"] == "linux/amd64"
    assert v3["rules"] == [
        "amd64 variant v3 read as cpu:x86_64_v3, which cpu:zen3 runs",
        "served as linux/amd64, the platform runtimes take by default",
    ]
    assert v3["score"]["satisfied"] == 1
    assert v2["served_platform"] is None and v2["fits"]
    assert v2["why_not"] == ["entry 1 fits this platform better"]
    assert base["rules"] == [] and base["score"]["satisfied"] == 0
    # core2 runs neither level: the baseline, which needs no rewriting.
    assert [e["chosen"] for e in core2["entries"]] == [False, False, True]
    assert core2["entries"][2]["served_platform"] is None
    assert "cpu:x86_64_v2 does not run on cpu:core2" in core2["entries"][0]["why_not"][0]


def test_cli_table_shows_the_level_rule(workdir: Path, levels_config: dict[str, Any]) -> None:
    path = workdir / "levels.yaml"
    path.write_text(yaml.safe_dump({**levels_config, "data_dir": str(workdir / "levels-cli")}))
    result = run_cli("--config", str(path), "--machine-type", "zen3", LEVELS_IMAGE)
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if "linux/amd64/v3" in line]
    assert "served as linux/amd64" in row and "✔" in row
    assert "x86_64_v3" in result.stdout
