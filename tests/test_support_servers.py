"""The test servers really work: a tiny image goes into a real registry with auth and comes
back out through docker, containerd and Podman, which run it.

These tests check the helpers in tests/support/servers.py; everything else end to end relies
on them, so a failure here points at the environment rather than at MetaHub.
"""

from __future__ import annotations

import gzip
import io
import json
import platform
import socket
import tarfile
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.oci import sha256
from tests.support.servers import Containerd, Dockerd, Podman, RegistryServer, skopeo

GREETING = "hello-from-layer"
REGISTRY_USER = "tester"
REGISTRY_PASSWORD = "s3cret-pass"
REF_NAME = "org.opencontainers.image.ref.name"
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def build_hello_layout(layout: Path, tag: str) -> str:
    """Write an OCI layout whose one image runs `busybox echo hello-from-layer`.

    Returns the manifest digest. The layer is a gzip'd tar of /bin/busybox (busybox-static,
    so nothing else is needed in the image); the config's diff_id is the uncompressed tar's.
    """
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = sha256(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    busybox = Path("/bin/busybox").read_bytes()
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("bin")
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        member = tarfile.TarInfo("bin/busybox")
        member.size, member.mode = len(busybox), 0o755
        tar.addfile(member, io.BytesIO(busybox))
    layer_tar = tar_buffer.getvalue()
    layer_gz = gzip.compress(layer_tar, compresslevel=1, mtime=0)

    config = json.dumps(
        {
            "architecture": ARCHITECTURES.get(platform.machine(), platform.machine()),
            "os": "linux",
            "config": {"Entrypoint": ["/bin/busybox", "echo", GREETING]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(layer_gz),
                    "size": len(layer_gz),
                }
            ],
        }
    ).encode()
    manifest_digest = put(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {REF_NAME: tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return manifest_digest


@dataclass
class Pushed:
    registry: RegistryServer
    ref: str
    digest: str


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    """The hello image, pushed with skopeo into a registry that wants a password."""
    tmp = tmp_path_factory.mktemp("pushed")
    digest = build_hello_layout(tmp / "layout", "v1")
    users = {REGISTRY_USER: REGISTRY_PASSWORD}
    with RegistryServer(tmp / "registry", htpasswd=users) as registry:
        ref = f"{registry.host}/tests/hello:v1"
        skopeo(
            "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
            f"--dest-creds={REGISTRY_USER}:{REGISTRY_PASSWORD}",
            f"oci:{tmp / 'layout'}:v1", f"docker://{ref}",
            check=True,
        )  # fmt: skip
        yield Pushed(registry, ref, digest)


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_missing_binary_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "REGISTRY", "/nonexistent/docker-registry")
    with pytest.raises(servers.MissingBinaryError, match="/nonexistent/docker-registry"):
        RegistryServer(tmp_path).start()


def test_an_unmarked_test_cannot_drive_a_container_runtime() -> None:
    with pytest.raises(servers.UnmarkedRuntimeError, match="needs the e2e marker"):
        servers.skopeo("--version")


@pytest.mark.e2e
def test_registry_wants_password_and_survives_restart(pushed: Pushed) -> None:
    registry = pushed.registry
    assert http_status(f"{registry.url}/v2/") == 401
    assert http_status(f"{registry.url}/v2/", (REGISTRY_USER, "wrong")) == 401
    assert http_status(f"{registry.url}/v2/", (REGISTRY_USER, REGISTRY_PASSWORD)) == 200

    registry.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", registry.port), 1):
        pass
    registry.start()

    inspected = skopeo(
        "inspect", "--raw", "--tls-verify=false",
        f"--creds={REGISTRY_USER}:{REGISTRY_PASSWORD}", f"docker://{pushed.ref}",
        check=True,
    )  # fmt: skip
    assert sha256(inspected.stdout.encode()) == pushed.digest


@pytest.mark.e2e
def test_registry_fixtures(registry: RegistryServer, auth_registry: RegistryServer) -> None:
    assert http_status(f"{registry.url}/v2/") == 200
    assert http_status(f"{auth_registry.url}/v2/") == 401
    [credentials] = auth_registry.users.items()
    assert http_status(f"{auth_registry.url}/v2/", credentials) == 200


@pytest.mark.e2e
def test_skopeo_copies_to_dir(pushed: Pushed, tmp_path: Path) -> None:
    skopeo(
        "copy", "--src-tls-verify=false", f"--src-creds={REGISTRY_USER}:{REGISTRY_PASSWORD}",
        f"docker://{pushed.ref}", f"dir:{tmp_path / 'copy'}",
        check=True,
    )  # fmt: skip
    assert sha256((tmp_path / "copy" / "manifest.json").read_bytes()) == pushed.digest


@pytest.mark.e2e
def test_docker_logs_in_pulls_and_runs(
    pushed: Pushed, dockerd: Dockerd, docker_config: Path
) -> None:
    login = dockerd.login(pushed.registry.host, REGISTRY_USER, REGISTRY_PASSWORD, docker_config)
    assert login.returncode == 0, login.stderr
    assert pushed.registry.host in json.loads((docker_config / "config.json").read_text())["auths"]

    result = dockerd.run(pushed.ref, docker_config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == GREETING


@pytest.mark.e2e
def test_docker_login_with_wrong_password_fails(
    pushed: Pushed, dockerd: Dockerd, docker_config: Path
) -> None:
    login = dockerd.login(pushed.registry.host, REGISTRY_USER, "wrong", docker_config)
    assert login.returncode != 0
    assert "401" in login.stderr or "unauthorized" in login.stderr.lower(), login.stderr


@pytest.mark.e2e
def test_containerd_pulls_and_runs(pushed: Pushed, containerd: Containerd) -> None:
    denied = containerd.pull(pushed.ref, REGISTRY_USER, "wrong")
    assert denied.returncode != 0

    containerd.pull(pushed.ref, REGISTRY_USER, REGISTRY_PASSWORD, check=True)
    result = containerd.run(pushed.ref, check=True)
    assert result.stdout.strip() == GREETING


@pytest.mark.e2e
def test_podman_pulls_and_runs(pushed: Pushed, podman: Podman) -> None:
    denied = podman.pull(pushed.ref, f"{REGISTRY_USER}:wrong")
    assert denied.returncode != 0

    podman.pull(pushed.ref, f"{REGISTRY_USER}:{REGISTRY_PASSWORD}", check=True)
    result = podman.run(pushed.ref, check=True)
    assert result.stdout.strip() == GREETING
