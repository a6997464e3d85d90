"""`metahub login` against a real `metahub serve`, then real docker and podman pulls with it.

A real docker-registry holds `site/app:latest`, an index whose best entry for this host is the
one built for its own CPU (as archspec names it). `metahub login --account` detects the host,
logs in with a profile login, writes docker's config.json and containers' auth.json, and the
runtimes then pull with nothing but those files.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import archspec.cpu
import pytest

from metahub.demo.images import FeatureImage, build_feature_images
from metahub.host.detect import host_platform
from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher
from tests.support.servers import Dockerd, Podman, RegistryServer, free_port

REPOSITORY = "site/app"
UPSTREAM_AUTH = ("upstream-user", "upstream-secret")
PASSWORD = "site-secret"
HOST_CPU = str(archspec.cpu.host().name)


def _build(tag: str, *features: str) -> FeatureImage:
    named = ",".join(features) or "generic"
    # Every build is plain x86-64, so any x86 host runs whichever it gets.
    return FeatureImage(tag, "x86-64", features, f">> {REPOSITORY} build for {named}")


BUILDS = {
    build.tag: build
    for build in (
        _build("baseline", "cpu:x86_64"),
        _build("this-cpu", f"cpu:{HOST_CPU}"),
        # No GPU has compute capability 1.x any more: this entry fits no host.
        _build("this-cpu-gpu", f"cpu:{HOST_CPU}", "nvcap:1.0"),
        _build("generic"),
    )
}
# What this host's profile login is once the server has left out `ht`, which it does not use.
PROFILE_LOGIN = f"site/cpu={HOST_CPU},platform={host_platform()}"


@dataclass(frozen=True)
class Setup:
    hub: MetaHubServer


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("host-login")
    with RegistryServer(work / "upstream", htpasswd=dict([UPSTREAM_AUTH])) as upstream:
        build_feature_images(work / "layout", REPOSITORY, BUILDS.values())
        pusher = Pusher(upstream.url, UPSTREAM_AUTH)
        pusher.layout(work / "layout", REPOSITORY)
        pusher.close()
        (work / "hub").mkdir()
        config = {
            "upstream": {
                "url": upstream.url,
                "username": UPSTREAM_AUTH[0],
                "password": UPSTREAM_AUTH[1],
            },
            "accounts": [{"login": "site", "password": PASSWORD, "profile_logins": True}],
            "machine_types": [
                {
                    "name": "baseline",
                    "login": "baseline",
                    "password": PASSWORD,
                    "features": ["cpu:x86_64"],
                },
                {
                    "name": "generic-nodes",
                    "login": "cluster-generic",
                    "password": PASSWORD,
                    "features": [],
                },
            ],
            # Failed logins are part of these tests; keep the limiter out of their way.
            "login_limit": {"failures": 1000},
        }
        with MetaHubServer(work / "hub", config) as hub:
            yield Setup(hub)


@dataclass
class Host:
    """A host's login files, all in a temp dir, and `metahub login` run against them."""

    home: Path
    docker_config: Path  # the directory: $DOCKER_CONFIG
    auth_file: Path  # $REGISTRY_AUTH_FILE

    @property
    def config_json(self) -> Path:
        return self.docker_config / "config.json"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("METAHUB_", "DOCKER_"))}
        env.pop("XDG_RUNTIME_DIR", None)
        env.update(
            HOME=str(self.home),
            DOCKER_CONFIG=str(self.docker_config),
            REGISTRY_AUTH_FILE=str(self.auth_file),
        )
        return env

    def login(
        self, *args: str, password: str | None = PASSWORD, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        extra = ("--password-stdin",) if password is not None else ()
        return subprocess.run(
            [sys.executable, "-m", "metahub", "login", *args, *extra],
            input=password if password is not None else "",
            capture_output=True,
            text=True,
            timeout=60,
            env={**self.env(), **(env or {})},
        )


@pytest.fixture
def host(tmp_path: Path) -> Host:
    home = tmp_path / "home"
    home.mkdir()
    return Host(home, tmp_path / "docker", tmp_path / "run" / "containers" / "auth.json")


def auth_of(path: Path, server: str) -> str:
    encoded = json.loads(path.read_text())["auths"][server]["auth"]
    return base64.b64decode(encoded).decode()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- writing the files ----------------------------------------------------------------------------


def test_login_writes_both_files_for_the_detected_profile(setup: Setup, host: Host) -> None:
    result = host.login(setup.hub.host, "--account", "site")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Login Succeeded: {PROFILE_LOGIN} at {setup.hub.host}",
        f"wrote {host.config_json}",
        f"wrote {host.auth_file}",
    ]
    assert f"note: {setup.hub.host} does not use ht: logged in without it" in result.stderr
    for path in (host.config_json, host.auth_file):
        assert auth_of(path, setup.hub.host) == f"{PROFILE_LOGIN}:{PASSWORD}"
        assert mode_of(path) == 0o600


def test_login_merges_into_existing_files(setup: Setup, host: Host) -> None:
    host.docker_config.mkdir()
    existing = {
        "auths": {
            "registry.example.org": {"auth": "dXNlcjpwYXNz"},
            setup.hub.host: {"auth": "b2xkOm9sZA==", "identitytoken": "stale", "email": "a@b.c"},
        },
        "credHelpers": {"gcr.io": "gcloud"},
        "psFormat": "table {{.ID}}",
    }
    host.config_json.write_text(json.dumps(existing))
    host.config_json.chmod(0o644)
    host.auth_file.parent.mkdir(parents=True)
    host.auth_file.write_text('{"auths": {"quay.io": {"auth": "cXVheTpwYXNz"}}}')
    result = host.login(setup.hub.host, "--account", "site")
    assert result.returncode == 0, result.stderr
    docker = json.loads(host.config_json.read_text())
    assert docker["auths"]["registry.example.org"] == {"auth": "dXNlcjpwYXNz"}
    assert docker["auths"][setup.hub.host]["email"] == "a@b.c"
    assert "identitytoken" not in docker["auths"][setup.hub.host]
    assert docker["credHelpers"] == {"gcr.io": "gcloud"}
    assert docker["psFormat"] == "table {{.ID}}"
    assert auth_of(host.config_json, setup.hub.host) == f"{PROFILE_LOGIN}:{PASSWORD}"
    assert mode_of(host.config_json) == 0o600
    containers = json.loads(host.auth_file.read_text())
    assert containers["auths"]["quay.io"] == {"auth": "cXVheTpwYXNz"}
    assert auth_of(host.auth_file, setup.hub.host) == f"{PROFILE_LOGIN}:{PASSWORD}"


def test_login_defaults_to_home_and_xdg_runtime_dir(
    setup: Setup, host: Host, tmp_path: Path
) -> None:
    runtime = tmp_path / "xdg-runtime"
    env = host.env()
    del env["DOCKER_CONFIG"], env["REGISTRY_AUTH_FILE"]
    env["XDG_RUNTIME_DIR"] = str(runtime)
    result = subprocess.run(
        [sys.executable, "-m", "metahub", "login", setup.hub.host, "--account", "site"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "METAHUB_PASSWORD": PASSWORD},
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    docker = host.home / ".docker" / "config.json"
    containers = runtime / "containers" / "auth.json"
    assert auth_of(docker, setup.hub.host) == f"{PROFILE_LOGIN}:{PASSWORD}"
    assert auth_of(containers, setup.hub.host) == f"{PROFILE_LOGIN}:{PASSWORD}"


def test_a_symlinked_config_is_written_where_it_points(
    setup: Setup, host: Host, tmp_path: Path
) -> None:
    dotfiles = tmp_path / "dotfiles" / "docker.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text('{"auths": {}}')
    host.docker_config.mkdir()
    host.config_json.symlink_to(dotfiles)
    assert host.login(setup.hub.host, "--account", "site").returncode == 0
    assert host.config_json.is_symlink()
    assert auth_of(dotfiles, setup.hub.host) == f"{PROFILE_LOGIN}:{PASSWORD}"


def test_skip_leaves_a_detected_key_out(setup: Setup, host: Host) -> None:
    result = host.login(setup.hub.host, "--account", "site", "--skip", "ht", "--skip", "platform")
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stderr
    assert auth_of(host.config_json, setup.hub.host) == f"site/cpu={HOST_CPU}:{PASSWORD}"


def test_machine_type_logins(setup: Setup, host: Host) -> None:
    by_name = host.login(setup.hub.host, "--machine-type", "baseline")
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.splitlines()[0] == f"Login Succeeded: baseline at {setup.hub.host}"
    assert auth_of(host.auth_file, setup.hub.host) == f"baseline:{PASSWORD}"
    explicit = host.login(
        setup.hub.host, "--machine-type", "generic-nodes", "--login", "cluster-generic"
    )
    assert explicit.returncode == 0, explicit.stderr
    assert explicit.stdout.splitlines()[0] == (
        f"Login Succeeded: cluster-generic at {setup.hub.host} (machine type generic-nodes)"
    )
    assert auth_of(host.config_json, setup.hub.host) == f"cluster-generic:{PASSWORD}"
    just_login = host.login(setup.hub.host, "--login", "cluster-generic")
    assert just_login.returncode == 0, just_login.stderr


def test_a_login_of_another_machine_type_writes_nothing(setup: Setup, host: Host) -> None:
    result = host.login(setup.hub.host, "--machine-type", "baseline", "--login", "cluster-generic")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: login 'cluster-generic' belongs to 'generic-nodes', not machine type 'baseline'; "
        "nothing was written"
    )
    assert not host.config_json.exists() and not host.auth_file.exists()


# -- --print --------------------------------------------------------------------------------------


def test_print_without_a_password_prints_the_detected_login_and_contacts_nothing(
    host: Host,
) -> None:
    port = free_port()  # nothing listens there
    result = host.login(f"127.0.0.1:{port}", "--account", "site", "--print", password=None)
    assert result.returncode == 0, result.stderr
    from metahub.host.detect import detect

    features = ",".join(sorted(f.replace(":", "=", 1) for f in detect().features))
    assert result.stdout == f"docker login -u site/{features} --password-stdin 127.0.0.1:{port}\n"
    assert not host.config_json.exists() and not host.auth_file.exists()


def test_print_with_a_password_prints_the_checked_login(setup: Setup, host: Host) -> None:
    result = host.login(setup.hub.host, "--account", "site", "--print")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"docker login -u {PROFILE_LOGIN} --password-stdin {setup.hub.host}\n"
    assert not host.config_json.exists() and not host.auth_file.exists()


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "password", "says"),
    [
        (["--account", "site"], "wrong", "refused the login: invalid username or password"),
        (["--account", "nobody"], PASSWORD, "refused the login: invalid username or password"),
        (
            ["--machine-type", "baseline"],
            "wrong",
            "refused the login: invalid username or password",
        ),
    ],
)
def test_refused_logins_fail_cleanly_and_write_nothing(
    setup: Setup, host: Host, args: list[str], password: str, says: str
) -> None:
    host.docker_config.mkdir()
    host.config_json.write_text('{"auths": {}}\n')
    result = host.login(setup.hub.host, *args, password=password)
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: {setup.hub.host} {says}"
    assert result.stdout == ""
    assert host.config_json.read_text() == '{"auths": {}}\n'
    assert not host.auth_file.exists()


def test_an_unreachable_server(host: Host) -> None:
    port = free_port()
    result = host.login(f"127.0.0.1:{port}", "--account", "site")
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot reach 127.0.0.1:{port} (")
    assert "Connection refused" in result.stderr and "Traceback" not in result.stderr


def test_no_password(setup: Setup, host: Host) -> None:
    result = host.login(setup.hub.host, "--account", "site", password=None)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: no password: pipe it in with --password-stdin, or set METAHUB_PASSWORD"
    )
    by_env = host.login(
        setup.hub.host, "--account", "site", password=None, env={"METAHUB_PASSWORD": PASSWORD}
    )
    assert by_env.returncode == 0, by_env.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "say how to log in: --account NAME"),
        (["--account", "site", "--machine-type", "baseline"], "--account makes a profile login"),
        (["--account", "site/cpu=zen3"], "--account is the account's name alone"),
    ],
)
def test_usage_errors(setup: Setup, host: Host, args: list[str], says: str) -> None:
    result = host.login(setup.hub.host, *args)
    assert result.returncode == 2
    assert says in result.stderr


def test_a_damaged_auth_file_is_named_and_left_alone(setup: Setup, host: Host) -> None:
    host.docker_config.mkdir()
    host.config_json.write_text('{"auths": {')
    result = host.login(setup.hub.host, "--account", "site")
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {host.config_json} is not valid JSON")
    assert host.config_json.read_text() == '{"auths": {'
    assert not host.auth_file.exists()  # checked before anything was written
    host.config_json.write_text('{"auths": []}')
    result = host.login(setup.hub.host, "--account", "site")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: {host.config_json}: 'auths' is not a JSON object; not touching it"
    )


# -- real runtimes with the written files ---------------------------------------------------------


@pytest.mark.e2e
def test_docker_pulls_the_host_s_build_with_the_written_config(
    setup: Setup, host: Host, dockerd: Dockerd
) -> None:
    logged_in = host.login(setup.hub.host, "--account", "site")
    assert logged_in.returncode == 0, logged_in.stderr
    ref = f"{setup.hub.host}/{REPOSITORY}:latest"
    # No docker login: the daemon gets the credentials from the config.json written above.
    result = dockerd.run(ref, host.docker_config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == BUILDS["this-cpu"].message
    dockerd.docker("image", "rm", ref, config_dir=host.docker_config)


@pytest.mark.e2e
def test_docker_cannot_pull_without_the_login(setup: Setup, host: Host, dockerd: Dockerd) -> None:
    host.docker_config.mkdir()
    pulled = dockerd.docker(
        "pull", f"{setup.hub.host}/{REPOSITORY}:latest", config_dir=host.docker_config
    )
    assert pulled.returncode != 0
    assert "unauthorized" in pulled.stderr.lower() or "no basic auth" in pulled.stderr.lower()


@pytest.mark.e2e
def test_podman_pulls_the_host_s_build_with_the_written_auth_file(
    setup: Setup, tmp_path: Path
) -> None:
    with Podman(tmp_path / "podman") as podman:
        host = Host(tmp_path / "home", tmp_path / "docker", podman.auth_file)
        host.home.mkdir()
        logged_in = host.login(setup.hub.host, "--account", "site")
        assert logged_in.returncode == 0, logged_in.stderr
        ref = f"{setup.hub.host}/{REPOSITORY}:latest"
        pulled = podman.pull(ref)  # no --creds: REGISTRY_AUTH_FILE is the file written above
        assert pulled.returncode == 0, pulled.stderr
        result = podman.run(ref)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == BUILDS["this-cpu"].message
