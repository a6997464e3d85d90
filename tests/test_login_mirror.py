"""`metahub login --mirror`: node files that send a registry's pulls through MetaHub.

Against a real `metahub serve` in front of a real docker-registry (with htpasswd, so a pull that
silently went around MetaHub fails): the files written (containerd's hosts.toml, a
registries.conf.d drop-in, the auth.json entry keyed by the mirror's location), their modes, and
that a re-run changes no byte and no mtime. Then real clients: containerd pulls the registry's
image by its own name with `ctr images pull --hosts-dir`, podman through the prefix mirror, and
skopeo with a machine type limited to some repositories. Every index starts with the generic
build, so a pull that was not filtered for the machine type runs the wrong program.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import archspec.cpu
import pytest

from metahub.demo.images import FeatureImage, build_feature_images
from metahub.host.mirrors import MirrorError, parse_mirror
from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher
from tests.support.servers import Containerd, Podman, RegistryServer, skopeo

REPOSITORY = "site/app"
OTHER = "other/app"
UPSTREAM_AUTH = ("upstream-user", "upstream-secret")
PASSWORD = "node-secret"
HOST_CPU = str(archspec.cpu.host().name)
PREFIX = "lab"  # MetaHub's path prefix for the upstream (a loopback host:port is no component)
BUILDS = [
    FeatureImage("generic", "x86-64", (), ">> generic build"),
    FeatureImage("this-cpu", "x86-64", (f"cpu:{HOST_CPU}",), f">> build for {HOST_CPU}"),
]


@dataclass(frozen=True)
class Setup:
    upstream: RegistryServer
    hub: MetaHubServer

    @property
    def registry(self) -> str:
        return self.upstream.host


def _machine_type(name: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "login": name,
        "password": PASSWORD,
        "features": [f"cpu:{HOST_CPU}"],
        **extra,
    }


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    work = tmp_path_factory.mktemp("mirror-upstream")
    with RegistryServer(work / "upstream", htpasswd=dict([UPSTREAM_AUTH])) as registry:
        build_feature_images(work / "layout", REPOSITORY, BUILDS)
        pusher = Pusher(registry.url, UPSTREAM_AUTH)
        for name in (REPOSITORY, OTHER):
            pusher.layout(work / "layout", REPOSITORY, into=name)
        pusher.close()
        yield registry


def _hub_config(upstream: RegistryServer, upstream_keys: dict[str, object]) -> dict[str, object]:
    return {
        **upstream_keys,
        "machine_types": [
            _machine_type("nodes"),
            _machine_type("limited", repositories=[f"{upstream.host}/site/*"]),
        ],
        "login_limit": {"failures": 1000},
    }


@pytest.fixture(scope="module")
def setup(upstream: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """MetaHub with the single `upstream:` of today: its default route serves every request."""
    work = tmp_path_factory.mktemp("mirror-hub")
    keys = {"upstream": {"url": upstream.url, "username": UPSTREAM_AUTH[0]}}
    keys["upstream"]["password"] = UPSTREAM_AUTH[1]  # type: ignore[index]
    with MetaHubServer(work, _hub_config(upstream, keys)) as hub:
        yield Setup(upstream, hub)


@pytest.fixture(scope="module")
def routed(upstream: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """MetaHub with `upstreams:`: the upstream reached by its prefix, as podman's mirror asks."""
    work = tmp_path_factory.mktemp("mirror-routed-hub")
    entry = {
        "registry": upstream.host,
        "url": upstream.url,
        "username": UPSTREAM_AUTH[0],
        "password": UPSTREAM_AUTH[1],
        "prefix": PREFIX,
        "default": True,
    }
    with MetaHubServer(work, _hub_config(upstream, {"upstreams": [entry]})) as hub:
        yield Setup(upstream, hub)


@dataclass
class Node:
    """A node's files, all under a temp dir, and `metahub login` run against them."""

    root: Path

    @property
    def docker_config(self) -> Path:
        return self.root / "docker"

    @property
    def auth_file(self) -> Path:
        return self.root / "run" / "auth.json"

    @property
    def hosts_dir(self) -> Path:
        return self.root / "etc" / "containerd" / "certs.d"

    @property
    def conf_dir(self) -> Path:
        # Where containers/image reads user drop-ins ($HOME/.config/...): podman reads it even
        # with CONTAINERS_REGISTRIES_CONF set, so the tests need not touch /etc.
        return self.root / "home" / ".config" / "containers" / "registries.conf.d"

    def files(self) -> list[Path]:
        return sorted(
            p
            for p in [
                *self.root.rglob("*.json"),
                *self.root.rglob("*.toml"),
                *self.root.rglob("*.conf"),
            ]
        )

    def login(self, server: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("METAHUB_", "DOCKER_"))}
        env.pop("XDG_RUNTIME_DIR", None)
        env.update(
            HOME=str(self.root / "home"),
            DOCKER_CONFIG=str(self.docker_config),
            REGISTRY_AUTH_FILE=str(self.auth_file),
        )
        return subprocess.run(
            [
                *(sys.executable, "-m", "metahub", "login", server, *args, "--password-stdin"),
                *("--containerd-hosts-dir", str(self.hosts_dir)),
                *("--registries-conf-dir", str(self.conf_dir)),
            ],
            input=PASSWORD,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )


@pytest.fixture
def node(tmp_path: Path) -> Node:
    (tmp_path / "node" / "home").mkdir(parents=True)
    return Node(tmp_path / "node")


def basic(login: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{PASSWORD}".encode()).decode()


def auth_entry(path: Path, key: str) -> str:
    return base64.b64decode(json.loads(path.read_text())["auths"][key]["auth"]).decode()


# -- --mirror as given -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "registry", "prefix"),
    [
        ("docker.io", "docker.io", "docker.io"),
        ("index.docker.io", "docker.io", "docker.io"),
        ("GHCR.io", "ghcr.io", "ghcr.io"),
        ("registry.lab:5000=lab", "registry.lab:5000", "lab"),
        ("quay.io=q", "quay.io", "q"),
    ],
)
def test_a_mirror_names_a_registry_and_its_prefix(text: str, registry: str, prefix: str) -> None:
    mirror = parse_mirror(text)
    assert (mirror.registry, mirror.prefix) == (registry, prefix)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("registry.lab:5000", "--mirror registry.lab:5000=PREFIX"),
        ("", "expected a registry"),
        ("https://ghcr.io/x", "expected a registry"),
        ("ghcr.io/acme", "expected a registry"),
        ("ghcr.io=Bad", "'Bad' is not a path component"),
        ("ghcr.io=a/b", "'a/b' is not a path component"),
    ],
)
def test_bad_mirrors_are_named(text: str, says: str) -> None:
    with pytest.raises(MirrorError, match="--mirror") as raised:
        parse_mirror(text)
    assert says in str(raised.value)


# -- the files -------------------------------------------------------------------------------


def test_mirror_files_for_containerd_and_podman(setup: Setup, node: Node) -> None:
    hub = setup.hub
    result = node.login(
        hub.host, "--machine-type", "nodes", "--mirror", f"{setup.registry}={PREFIX}"
    )
    assert result.returncode == 0, result.stderr

    hosts = node.hosts_dir / setup.registry / "hosts.toml"
    assert tomllib.loads(hosts.read_text()) == {
        "server": setup.upstream.url,
        "host": {
            hub.url: {
                "capabilities": ["pull", "resolve"],
                "header": {"Authorization": [basic("nodes")]},
            }
        },
    }
    (drop_in,) = node.conf_dir.iterdir()
    location = f"{hub.host}/{PREFIX}"
    assert tomllib.loads(drop_in.read_text()) == {
        "registry": [
            {
                "prefix": setup.registry,
                "location": setup.registry,
                "mirror": [{"location": location, "insecure": True}],
            }
        ]
    }
    assert auth_entry(node.auth_file, location) == f"nodes:{PASSWORD}"
    assert auth_entry(node.auth_file, hub.host) == f"nodes:{PASSWORD}"
    for path in (hosts, drop_in, node.auth_file, node.docker_config / "config.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert f"wrote {path}" in result.stdout.splitlines()


def test_several_mirrors_and_docker_hub(setup: Setup, node: Node) -> None:
    result = node.login(
        setup.hub.host,
        "--machine-type",
        "nodes",
        "--mirror",
        "docker.io",
        "--mirror",
        f"{setup.registry}={PREFIX}",
    )
    assert result.returncode == 0, result.stderr
    hub_hosts = tomllib.loads((node.hosts_dir / "docker.io" / "hosts.toml").read_text())
    assert hub_hosts["server"] == "https://registry-1.docker.io"
    assert list(hub_hosts["host"]) == [setup.hub.url]
    names = sorted(p.name for p in node.conf_dir.iterdir())
    assert len(names) == 2
    drop_ins = [tomllib.loads((node.conf_dir / n).read_text())["registry"][0] for n in names]
    assert {d["prefix"]: d["mirror"][0]["location"] for d in drop_ins} == {
        "docker.io": f"{setup.hub.host}/docker.io",
        setup.registry: f"{setup.hub.host}/{PREFIX}",
    }
    assert auth_entry(node.auth_file, f"{setup.hub.host}/docker.io") == f"nodes:{PASSWORD}"


def test_running_the_login_again_changes_nothing(setup: Setup, node: Node) -> None:
    args = ("--machine-type", "nodes", "--mirror", f"{setup.registry}={PREFIX}")
    assert node.login(setup.hub.host, *args).returncode == 0
    files = node.files()
    assert len(files) == 4  # config.json, auth.json, hosts.toml, the drop-in
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in files}
    again = node.login(setup.hub.host, *args)
    assert again.returncode == 0, again.stderr
    assert node.files() == files
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in files} == before
    assert f"unchanged {node.hosts_dir / setup.registry / 'hosts.toml'}" in again.stdout


def test_a_bad_mirror_writes_nothing(setup: Setup, node: Node) -> None:
    result = node.login(setup.hub.host, "--machine-type", "nodes", "--mirror", setup.registry)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"--mirror {setup.registry}=PREFIX" in result.stderr
    assert node.files() == []


def test_a_refused_login_writes_no_mirror(setup: Setup, node: Node) -> None:
    result = node.login(setup.hub.host, "--machine-type", "absent", "--mirror", "docker.io")
    assert result.returncode != 0
    assert "refused" in result.stderr
    assert node.files() == []


# -- real clients ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_containerd_pulls_by_the_registry_s_own_name_through_metahub(
    setup: Setup, node: Node, tmp_path: Path
) -> None:
    logged_in = node.login(setup.hub.host, "--machine-type", "nodes", "--mirror", "docker.io")
    assert logged_in.returncode == 0, logged_in.stderr
    # The upstream's own hosts.toml, written the same way (its prefix does not matter here).
    logged_in = node.login(
        setup.hub.host, "--machine-type", "nodes", "--mirror", f"{setup.registry}={PREFIX}"
    )
    assert logged_in.returncode == 0, logged_in.stderr
    ref = f"{setup.registry}/{REPOSITORY}:latest"
    with Containerd(tmp_path / "containerd") as containerd:
        pulled = containerd.ctr(
            "images",
            "pull",
            "--hosts-dir",
            str(node.hosts_dir),
            f"--snapshotter={containerd.snapshotter}",
            ref,
        )
        assert pulled.returncode == 0, pulled.stderr
        ran = containerd.run(ref)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == BUILDS[1].message


@pytest.mark.e2e
def test_podman_pulls_through_the_prefix_mirror(
    routed: Setup, node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Podman(tmp_path / "podman") as podman:
        logged_in = node.login(
            routed.hub.host, "--machine-type", "nodes", "--mirror", f"{routed.registry}={PREFIX}"
        )
        assert logged_in.returncode == 0, logged_in.stderr
        # podman reads the drop-in from $HOME/.config and the login from its auth file.
        monkeypatch.setenv("HOME", str(node.root / "home"))
        podman.auth_file.write_bytes(node.auth_file.read_bytes())
        ref = f"{routed.registry}/{REPOSITORY}:latest"
        pulled = podman.pull(ref)
        assert pulled.returncode == 0, pulled.stderr
        ran = podman.run(ref)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == BUILDS[1].message


@pytest.mark.e2e
def test_skopeo_with_a_limited_machine_type(setup: Setup) -> None:
    creds = f"limited:{PASSWORD}"

    def inspect(name: str) -> subprocess.CompletedProcess[str]:
        image = f"docker://{setup.hub.host}/{name}:latest"
        return skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds, image)

    allowed = inspect(REPOSITORY)
    assert allowed.returncode == 0, allowed.stderr
    assert len(json.loads(allowed.stdout)["manifests"]) == 1  # filtered for `limited`
    denied = inspect(OTHER)
    assert denied.returncode != 0
    assert f"machine type 'limited' may not pull {setup.registry}/{OTHER}" in denied.stderr
    assert "site/*" not in denied.stderr


def test_print_takes_no_mirror(setup: Setup, node: Node) -> None:
    result = node.login(
        setup.hub.host, "--machine-type", "nodes", "--mirror", "docker.io", "--print"
    )
    assert result.returncode == 2
    assert "--print writes nothing; it takes no --mirror" in result.stderr
    assert node.files() == []
