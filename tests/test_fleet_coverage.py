"""Coverage (`GET /api/v1/coverage`, `metahub coverage`) and pulls counted by machine type and
outcome in `/metrics`, against a real docker-registry upstream.

The upstream holds three images, built and hashed here:
- `fleet/app:1`: amd64 `cpu:broadwell`, amd64 generic, arm64 generic;
- `fleet/skylake-only:1`: one amd64 `cpu:skylake` build, no generic one;
- `fleet/plain:1`: a single image manifest, no index.
The expected outcomes follow from archspec's lineage, checked here as premises.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import archspec.cpu
import httpx
import orjson
import pytest

from tests.support import fleet_images
from tests.support.fleet_images import BuildIndex
from tests.support.inprocess import InProcessHub
from tests.support.oci import ACCEPT_ALL
from tests.support.push import Pusher
from tests.support.scrape import scrape, value
from tests.support.servers import RegistryServer

ADMIN_TOKEN = "fleet-coverage-admin-token"
AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64"}
APP, SKYLAKE_ONLY, PLAIN = "fleet/app:1", "fleet/skylake-only:1", "fleet/plain:1"
CPUS = {"bw": "broadwell", "sk": "skylake", "iv": "ivybridge", "hw": "haswell", "zen": "zen2"}
MACHINE_TYPES = [
    *(
        {"name": n, "login": n, "password": f"{n}-pw", "features": [f"cpu:{c}"]}
        for n, c in CPUS.items()
    ),
    {"name": "gpu", "login": "gpu", "password": "gpu-pw", "features": ["nvcap:8.0"]},
]
NAMES = sorted(m["name"] for m in MACHINE_TYPES)
PULLS = "metahub_manifest_pulls_total"


def runs_on(build: str, machine: str) -> bool:
    """archspec: code for `build` runs on `machine` (an ancestor, or the same)."""
    return bool(archspec.cpu.TARGETS[build] <= archspec.cpu.TARGETS[machine])


def fleet_images_built() -> dict[str, BuildIndex]:
    return {
        APP: fleet_images.build_index(
            "app", [(AMD64, ("cpu:broadwell",)), (AMD64, ()), (ARM64, ())]
        ),
        SKYLAKE_ONLY: fleet_images.build_index("sk-only", [(AMD64, ("cpu:skylake",))]),
        PLAIN: fleet_images.build_index("plain", [(AMD64, ())]),
    }


def push_all(registry: RegistryServer, images: dict[str, BuildIndex]) -> None:
    pusher = Pusher(registry.url)
    for image, built in images.items():
        name, tag = image.split(":")
        if image == PLAIN:
            fleet_images.push_single(pusher, name, tag, built.builds[0])
        else:
            fleet_images.push(pusher, name, tag, built)
    pusher.close()


@pytest.fixture(scope="module")
def images() -> dict[str, BuildIndex]:
    return fleet_images_built()


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, BuildIndex]
) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("fleet-registry")) as registry:
        push_all(registry, images)
        yield registry


def hub_config(upstream_url: str) -> dict[str, Any]:
    return {
        "upstream": {"url": upstream_url},
        "machine_types": MACHINE_TYPES,
        "accounts": [{"login": "hpc", "password": "hpc-pw", "profile_logins": True}],
        "anonymous": {"unfiltered": True},
        "admin": {"tokens": [ADMIN_TOKEN]},
    }


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, upstream: RegistryServer
) -> Iterator[InProcessHub]:
    workdir = tmp_path_factory.mktemp("fleet-hub")
    with InProcessHub(workdir, hub_config(upstream.url)) as running:
        yield running


@pytest.fixture(scope="module")
def api(hub: InProcessHub) -> Iterator[httpx.Client]:
    with hub.client(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        yield client


def coverage(api: httpx.Client, *images: str, machine_types: tuple[str, ...] = ()) -> Any:
    params = [("image", image) for image in images] + [("machine_type", m) for m in machine_types]
    response = api.get("/api/v1/coverage", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def entry(build: fleet_images.Build) -> dict[str, Any]:
    return {
        "platform": build.platform_text,
        "features": list(build.features),
        "digest": build.digest,
    }


def test_lineage_premises() -> None:
    assert runs_on("broadwell", "skylake")
    assert not runs_on("broadwell", "haswell")
    assert not runs_on("broadwell", "ivybridge")
    assert not runs_on("broadwell", "zen2")
    assert runs_on("ivybridge", "haswell") and runs_on("ivybridge", "broadwell")
    assert runs_on("ivybridge", "skylake")
    assert not runs_on("ivybridge", "zen2")
    assert not runs_on("haswell", "ivybridge")
    assert not runs_on("zen2", "haswell") and not runs_on("zen2", "ivybridge")
    assert not runs_on("skylake", "broadwell")


def test_coverage_tells_each_machine_type_what_a_pull_gets(
    api: httpx.Client, images: dict[str, BuildIndex]
) -> None:
    report = coverage(api, APP, SKYLAKE_ONLY, PLAIN)
    assert [row["image"] for row in report["images"]] == [APP, SKYLAKE_ONLY, PLAIN]
    app, sk_only, plain = report["images"]

    built = images[APP]
    assert app["digest"] == built.digest
    cells = {cell["machine_type"]: cell for cell in app["machine_types"]}
    assert sorted(cells) == NAMES
    broadwell, generic, arm = (
        built.build("cpu:broadwell"),
        built.build(),
        built.build(architecture="arm64"),
    )
    for name in ("bw", "sk"):  # a broadwell build runs on both
        assert cells[name]["outcome"] == "matched"
        assert cells[name]["entries"] == [entry(broadwell), entry(arm)]
    for name in ("iv", "hw", "zen", "gpu"):
        assert cells[name]["outcome"] == "generic"
        assert cells[name]["entries"] == [entry(generic), entry(arm)]
    assert cells["bw"]["served_digest"] not in (None, built.digest)  # a filtered index

    only = images[SKYLAKE_ONLY]
    assert sk_only["digest"] == only.digest
    outcomes = {cell["machine_type"]: cell["outcome"] for cell in sk_only["machine_types"]}
    assert outcomes == {n: "matched" if n == "sk" else "none" for n in NAMES}
    none_cell = next(c for c in sk_only["machine_types"] if c["machine_type"] == "bw")
    assert none_cell["entries"] == [] and none_cell["served_digest"] is None

    single = images[PLAIN].builds[0]
    assert plain["digest"] == single.digest
    for cell in plain["machine_types"]:
        assert cell["outcome"] == "generic"
        assert cell["entries"] == [{"platform": None, "features": [], "digest": single.digest}]


def test_coverage_suggests_builds_along_the_lineage(api: httpx.Client) -> None:
    app, sk_only, plain = coverage(api, APP, SKYLAKE_ONLY, PLAIN)["images"]
    # An ivybridge build runs on haswell too; zen2 needs its own; gpu declares no cpu.
    assert app["suggested_builds"] == {
        "targets": [
            {"target": "ivybridge", "feature": "cpu:ivybridge", "machine_types": ["hw", "iv"]},
            {"target": "zen2", "feature": "cpu:zen2", "machine_types": ["zen"]},
        ],
        "unreachable": ["gpu"],
    }
    assert sk_only["suggested_builds"] == {"targets": [], "unreachable": []}  # none, not generic
    # Every type is generic on the plain image: the fewest builds, so ivybridge covers four.
    targets = {t["target"]: t["machine_types"] for t in plain["suggested_builds"]["targets"]}
    assert targets == {"ivybridge": ["bw", "hw", "iv", "sk"], "zen2": ["zen"]}


def test_coverage_for_named_machine_types_and_profile_logins(api: httpx.Client) -> None:
    report = coverage(api, APP, machine_types=("zen", "hpc/cpu=cascadelake"))
    cells = report["images"][0]["machine_types"]
    assert [(c["machine_type"], c["outcome"]) for c in cells] == [
        ("zen", "generic"),
        ("hpc/cpu=cascadelake", "matched"),  # cascadelake descends from broadwell
    ]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ([], 422, "INVALID_REQUEST"),
        ([("image", "Not A Name")], 400, "NAME_INVALID"),
        ([("image", "fleet/app:bad tag")], 400, "TAG_INVALID"),
        ([("image", "fleet/missing:1")], 404, "MANIFEST_UNKNOWN"),
        ([("image", APP), ("machine_type", "nope")], 404, "NOT_FOUND"),
    ],
)
def test_coverage_refuses_bad_input_with_a_registry_error(
    api: httpx.Client, params: list[tuple[str, str]], status: int, code: str
) -> None:
    response = api.get("/api/v1/coverage", params=params)
    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["code"] == code


def test_coverage_needs_an_admin_token(hub: InProcessHub) -> None:
    with hub.client() as anonymous:
        response = anonymous.get("/api/v1/coverage", params={"image": APP})
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_coverage_command_prints_the_same_json_and_a_table(
    tmp_path: Path, upstream: RegistryServer, api: httpx.Client
) -> None:
    config = tmp_path / "metahub.yaml"
    config.write_bytes(
        orjson.dumps({"data_dir": str(tmp_path / "data"), **hub_config(upstream.url)})
    )
    command = [sys.executable, "-m", "metahub", "coverage", "--config", str(config), APP, PLAIN]
    done = subprocess.run([*command, "--json"], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert orjson.loads(done.stdout) == coverage(api, APP, PLAIN)

    table = subprocess.run(
        [*command, "--machine-type", "bw", "--machine-type", "zen"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    bw_row = next(line for line in lines if line.strip("│ ").startswith("bw "))
    zen_row = next(line for line in lines if line.strip("│ ").startswith("zen "))
    assert "matched (cpu:broadwell)" in bw_row and "generic" in bw_row
    assert "generic" in zen_row and "matched" not in zen_row
    assert f"{APP}: builds that would match the generic machine types: cpu:zen2 for zen" in (
        table.stdout
    )

    unknown = subprocess.run(
        [*command, "--machine-type", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert unknown.returncode == 1
    assert "machine type 'nope' does not exist" in unknown.stderr
    assert "Traceback" not in unknown.stderr


# -- pulls by machine type and outcome in /metrics -------------------------------------------


def basic(login: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{login}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}", "accept": ACCEPT_ALL}


def pull(client: httpx.Client, image: str, headers: dict[str, str], method: str = "GET") -> int:
    name, tag = image.split(":")
    return client.request(method, f"/v2/{name}/manifests/{tag}", headers=headers).status_code


def test_metrics_count_pulls_by_machine_type_and_outcome(
    hub: InProcessHub, images: dict[str, BuildIndex]
) -> None:
    with hub.client() as client:
        before = scrape(client)
        assert pull(client, APP, basic("bw", "bw-pw")) == 200
        assert pull(client, APP, basic("bw", "bw-pw"), "HEAD") == 200  # a cached answer counts
        assert pull(client, APP, basic("zen", "zen-pw")) == 200
        assert pull(client, SKYLAKE_ONLY, basic("zen", "zen-pw")) == 404
        assert pull(client, PLAIN, basic("sk", "sk-pw")) == 200
        assert pull(client, APP, {"accept": ACCEPT_ALL}) == 200  # anonymous: unfiltered
        for profile in ("hpc/cpu=zen3", "hpc/cpu=cascadelake", "hpc/cpu=skylake"):
            assert pull(client, APP, basic(profile, "hpc-pw")) == 200
        # A pull by digest follows a tag's and is not a pull of its own.
        digest = images[APP].build("cpu:broadwell").digest
        by_digest = client.get(f"/v2/fleet/app/manifests/{digest}", headers=basic("bw", "bw-pw"))
        assert by_digest.status_code == 200
        after = scrape(client)

    def delta(machine_type: str, outcome: str) -> float:
        labels = {"machine_type": machine_type, "outcome": outcome}
        return value(after, PULLS, **labels) - value(before, PULLS, **labels)

    assert delta("bw", "matched") == 2
    assert delta("zen", "generic") == 1
    assert delta("zen", "none") == 1
    assert delta("sk", "generic") == 1
    assert delta("-", "unfiltered") == 1
    # Profile logins count under their account, whatever features they name.
    assert delta("hpc/*", "matched") == 2
    assert delta("hpc/*", "generic") == 1
    series = {dict(labels)["machine_type"] for (name, labels) in after if name == PULLS}
    assert not any(label.startswith("hpc/") and label != "hpc/*" for label in series)
