"""Mirror mode with real clients: containerd pulls each registry's image by its own name through
MetaHub (hosts.toml, `?ns=`), skopeo through path prefixes and the default upstream.

Each upstream index lists first a build that machine type `node` must not get, and each hosts.toml
names the real upstream as `server`: a pull that silently fell back to the upstream would run
that first build and print the wrong line. Expected digests are the registries' own.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mirror import NODE, TAG, Mirror, mirror
from tests.support.servers import Containerd, skopeo

pytestmark = pytest.mark.e2e

GHCR, LAB, HUB = "ghcr.io", "registry.lab:5000", "docker.io"
# The image reference each registry's image has, as a cluster names it.
REFERENCES = {
    HUB: f"docker.io/library/app:{TAG}",
    GHCR: f"ghcr.io/acme/app:{TAG}",
    LAB: f"registry.lab:5000/acme/app:{TAG}",
}
CREDS = f"{NODE[0]}:{NODE[1]}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    with mirror(tmp_path_factory.mktemp("e2e-mirror")) as running:
        yield running


@pytest.fixture(scope="module")
def hosts_dir(setup: Mirror, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """containerd's certs.d: MetaHub as the mirror of each registry, the upstream as server.

    `quay.io` is mirrored too, though MetaHub does not serve it: its server is
    registry.lab:5000's upstream, so a pull succeeds only by falling back there."""
    hosts = tmp_path_factory.mktemp("certs.d")
    servers = {name: server.url for name, server in setup.upstreams.items()}
    servers["quay.io"] = setup.upstreams[LAB].url
    for registry, server in servers.items():
        directory = hosts / registry
        directory.mkdir()
        (directory / "hosts.toml").write_text(
            f'server = "{server}"\n[host."{setup.hub.url}"]\n  capabilities = ["pull", "resolve"]\n'
        )
    return hosts


def pull(containerd: Containerd, hosts: Path, reference: str) -> None:
    pulled = containerd.ctr(
        "images",
        "pull",
        f"--snapshotter={containerd.snapshotter}",
        "--hosts-dir",
        str(hosts),
        "--user",
        CREDS,
        reference,
    )
    assert pulled.returncode == 0, pulled.stderr


@pytest.mark.parametrize("registry", [HUB, GHCR, LAB])
def test_containerd_pulls_each_registry_by_its_own_name(
    setup: Mirror, containerd: Containerd, hosts_dir: Path, registry: str
):
    reference = REFERENCES[registry]
    pull(containerd, hosts_dir, reference)
    ran = containerd.run(reference)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == setup.images[registry].message
    # MetaHub answered it, and asked that registry's upstream for it (access log).
    repository = setup.images[registry].repository
    # (Lines are matched on the registry too: ghcr.io's requests share this path.)
    marked = f" upstream={registry}"
    lines = _access_lines(setup, f"/v2/{repository}/manifests/{TAG}", marked)
    assert any(line.endswith(marked) for line in lines)


def test_containerd_falls_back_when_metahub_mirrors_no_such_registry(
    setup: Mirror, containerd: Containerd, hosts_dir: Path
):
    reference = f"quay.io/acme/app:{TAG}"
    pull(containerd, hosts_dir, reference)
    ran = containerd.run(reference)
    assert ran.returncode == 0, ran.stderr
    # The upstream's own index, unfiltered: its first entry.
    assert ran.stdout.strip() == setup.images[LAB].generic_message
    # MetaHub said 404 at once, routed nowhere.
    lines = _access_lines(setup, f"/v2/acme/app/manifests/{TAG}", '" 404 ')
    assert any("upstream=" not in line for line in lines)


def _access_lines(setup: Mirror, path: str, also: str = "") -> list[str]:
    """Access-log lines of `path` (containing `also`); they are written in batches: wait."""
    deadline = time.monotonic() + 10
    while True:
        lines = [
            line
            for line in setup.hub.log_path.read_text().splitlines()
            if (f'"HEAD {path}"' in line or f'"GET {path}"' in line) and also in line
        ]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def inspect_raw(setup: Mirror, path: str) -> tuple[int, str, str]:
    result = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        CREDS,
        f"docker://{setup.hub.host}/{path}",
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("path", "registry"),
    [
        (f"ghcr.io/acme/app:{TAG}", GHCR),  # a prefix: the registry's name
        (f"lab/acme/app:{TAG}", LAB),  # a prefix given in the config
        (f"docker.io/app:{TAG}", HUB),  # docker.io's prefix, library/ added
        (f"app:{TAG}", HUB),  # no prefix: the default upstream, library/ added
        (f"library/app:{TAG}", HUB),
    ],
)
def test_skopeo_through_prefixes_and_the_default(setup: Mirror, path: str, registry: str):
    code, out, err = inspect_raw(setup, path)
    assert code == 0, err
    index = json.loads(out)
    amd64 = [m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "amd64"]
    assert amd64 == [setup.images[registry].chosen]


def test_skopeo_copy_gets_the_chosen_build(setup: Mirror, tmp_path: Path):
    result = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        CREDS,
        "--override-arch",
        "amd64",
        "--override-os",
        "linux",
        f"docker://{setup.hub.host}/lab/acme/app:{TAG}",
        f"dir:{tmp_path / 'copy'}",
    )
    assert result.returncode == 0, result.stderr
    manifest = (tmp_path / "copy" / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == setup.images[LAB].chosen


def test_skopeo_sees_name_unknown_for_a_prefix_alone(setup: Mirror):
    code, _, err = inspect_raw(setup, f"ghcr.io:{TAG}")
    assert code != 0
    assert "name unknown" in err.lower()
    assert "ghcr.io" in err


def test_skopeo_an_unknown_first_component_is_the_default_upstreams(setup: Mirror):
    # quay.io is no prefix here: docker.io's repository quay.io/acme/app, which does not exist.
    code, _, err = inspect_raw(setup, f"quay.io/acme/app:{TAG}")
    assert code != 0
    assert "manifest unknown" in err.lower()
