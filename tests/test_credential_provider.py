"""`metahub-credential-provider` run as kubelet runs it: a subprocess, the request on stdin.

The protocol (KEP-2133, `credentialprovider.kubelet.k8s.io/v1` and `v1beta1`) and its bad
inputs are checked on the real console script's module; then its answer is used by skopeo
against a real `metahub serve` in front of a real docker-registry, and must pull the build that
fits this host as archspec names it (the expected digest is read from the upstream directly).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import archspec.cpu
import httpx
import pytest

from metahub.demo.images import FeatureImage, build_feature_images
from metahub.host.credential_provider import BOOT_ID
from tests.support.metahub_server import MetaHubServer
from tests.support.oci import ACCEPT_ALL
from tests.support.push import Pusher
from tests.support.servers import RegistryServer, skopeo

V1 = "credentialprovider.kubelet.k8s.io/v1"
V1BETA1 = "credentialprovider.kubelet.k8s.io/v1beta1"
PASSWORD = "node-secret"
HOST_CPU = str(archspec.cpu.host().name)
REPOSITORY = "site/app"


def provide(
    args: list[str], stdin: bytes | str, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """The console script's entry point, as kubelet starts it: argv, stdin, no terminal."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run(
        [sys.executable, "-c", "from metahub.host.credential_provider import main; main()", *args],
        input=data,
        capture_output=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def request(image: str = "metahub.example.org/qnib/bench:latest", **extra: Any) -> str:
    body = {"apiVersion": V1, "kind": "CredentialProviderRequest", "image": image, **extra}
    return json.dumps(body)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


def answer(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    return dict(json.loads(result.stdout))


def test_a_machine_type_login_answers_keyed_by_the_image_registry(password_file: Path) -> None:
    result = provide(["--login", "gpu-nodes", "--password-file", str(password_file)], request())
    assert answer(result) == {
        "apiVersion": V1,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "cacheDuration": "1h",
        "auth": {"metahub.example.org": {"username": "gpu-nodes", "password": PASSWORD}},
    }


def test_the_request_s_api_version_is_echoed(password_file: Path) -> None:
    body = json.dumps(
        {"apiVersion": V1BETA1, "kind": "CredentialProviderRequest", "image": "a.example/b"}
    )
    result = provide(["--login", "x", "--password-file", str(password_file)], body)
    assert answer(result)["apiVersion"] == V1BETA1


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("metahub.example.org:5000/qnib/bench@sha256:" + "a" * 64, "metahub.example.org:5000"),
        ("localhost/app", "localhost"),
        ("nginx", "docker.io"),
        ("library/nginx:1.25", "docker.io"),
        ("docker.io/library/nginx", "docker.io"),
        ("index.docker.io/library/nginx", "docker.io"),
        ("GHCR.io/acme/app", "ghcr.io"),
        ("127.0.0.1:5000/a", "127.0.0.1:5000"),
    ],
)
def test_the_auth_key_is_the_image_s_registry_host(
    password_file: Path, image: str, registry: str
) -> None:
    result = provide(["--login", "x", "--password-file", str(password_file)], request(image))
    assert list(answer(result)["auth"]) == [registry]


def test_a_profile_login_from_given_features_and_a_cache_duration(password_file: Path) -> None:
    args = ["--account", "hpc", "--password-file", str(password_file)]
    args += ["--features", "nvcap:8.6, cpu:zen3,ht:on", "--skip", "ht", "--cache-duration", "5m"]
    body = answer(provide(args, request()))
    assert body["auth"]["metahub.example.org"]["username"] == "hpc/cpu=zen3,nvcap=8.6"
    assert body["cacheDuration"] == "5m"


def test_detected_features_are_cached_per_boot(password_file: Path, tmp_path: Path) -> None:
    """The first call detects and writes the cache; a later one on this boot reads it."""
    cache = tmp_path / "cache" / "features.json"
    args = ["--account", "hpc", "--password-file", str(password_file), "--cache-file", str(cache)]
    first = answer(provide(args, request()))["auth"]["metahub.example.org"]["username"]
    assert first.startswith(f"hpc/cpu={HOST_CPU},")
    boot = BOOT_ID.read_text().strip()
    assert json.loads(cache.read_text())["boot_id"] == boot
    # A cache of this boot is believed as it is: these features come from it, not the host.
    cache.write_text(json.dumps({"boot_id": boot, "features": ["cpu:zen4", "nvcap:9.0"]}))
    cached = answer(provide(args, request()))["auth"]["metahub.example.org"]["username"]
    assert cached == "hpc/cpu=zen4,nvcap=9.0"
    # One of another boot is not: the host is detected again.
    cache.write_text(json.dumps({"boot_id": "another-boot", "features": ["cpu:zen4"]}))
    assert answer(provide(args, request()))["auth"]["metahub.example.org"]["username"] == first
    cache.write_text("not json")
    assert answer(provide(args, request()))["auth"]["metahub.example.org"]["username"] == first


@pytest.mark.parametrize(
    ("stdin", "says"),
    [
        ("{", "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "not a JSON object"),
        (json.dumps({"apiVersion": V1, "kind": "Pod", "image": "a/b"}), "expected kind"),
        (json.dumps({"apiVersion": "v9", "kind": "CredentialProviderRequest"}), "apiVersion"),
        (json.dumps({"apiVersion": V1, "kind": "CredentialProviderRequest"}), "no image"),
        (request(image=""), "no image"),
        (json.dumps({"apiVersion": V1, "kind": "CredentialProviderRequest", "image": 5}), "image"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_requests_fail_with_one_line(password_file: Path, stdin: str, says: str) -> None:
    result = provide(["--login", "x", "--password-file", str(password_file)], stdin)
    assert_one_line_failure(result, says)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--login", "x", "--password-file", "/nonexistent/password"], "/nonexistent/password"),
        (["--login", "x", "--password-file", "{empty}"], "is empty"),
        (["--login", "x", "--password-file", "{dir}"], "cannot read the password file"),
        (["--password-file", "{pw}"], "one of the arguments --account --login is required"),
        (["--login", "x", "--account", "y", "--password-file", "{pw}"], "not allowed with"),
        (["--login", "x"], "--password-file"),
        (["--login", "x", "--password-file", "{pw}", "--features", "cpu:x"], "with --account"),
        (["--account", "hpc/cpu=x", "--password-file", "{pw}"], "account's name alone"),
        (["--account", "hpc", "--password-file", "{pw}", "--features", ","], "no features"),
        (["--login", "x", "--password-file", "{pw}", "--cache-duration", "soon"], "duration"),
        (["--login", "x", "--password-file", "{pw}", "--unknown"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_fail_with_one_line(
    tmp_path: Path, password_file: Path, args: list[str], says: str
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    filled = [
        a.format(empty=empty, dir=tmp_path, pw=password_file) if "{" in a else a for a in args
    ]
    assert_one_line_failure(provide(filled, request()), says)


def assert_one_line_failure(result: subprocess.CompletedProcess[bytes], says: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert result.stdout == b""
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("metahub-credential-provider: ")
    assert says in stderr


def test_the_console_script_is_declared() -> None:
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert 'metahub-credential-provider = "metahub.host.credential_provider:main"' in pyproject


def test_the_installed_console_script_answers_as_kubelet_runs_it(password_file: Path) -> None:
    """The binary kubelet names in its CredentialProviderConfig, as `make install` puts it."""
    script = Path(sys.executable).parent / "metahub-credential-provider"
    assert script.is_file(), f"{script} is not installed: run make install"
    args = ["--login", "node-login", "--password-file", str(password_file)]
    answered = subprocess.run(
        [str(script), *args], input=request().encode(), capture_output=True, timeout=60
    )
    assert answered.returncode == 0, answered.stderr.decode()
    response = json.loads(answered.stdout)
    assert response["kind"] == "CredentialProviderResponse"
    assert response["auth"]["metahub.example.org"]["username"] == "node-login"
    refused = subprocess.run(
        [str(script), *args], input=b"{not json", capture_output=True, timeout=60
    )
    assert_one_line_failure(refused, "JSON")


# -- with a real MetaHub and skopeo ------------------------------------------------------------


BUILDS = [
    # The generic build comes first: a pull that was not filtered gets it, and fails the test.
    FeatureImage("generic", "x86-64", (), ">> generic build"),
    FeatureImage("baseline", "x86-64", ("cpu:x86_64",), ">> baseline build"),
    FeatureImage("this-cpu", "x86-64", (f"cpu:{HOST_CPU}",), f">> build for {HOST_CPU}"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MetaHubServer, str]]:
    """A MetaHub with a profile-login account; returns it and the expected manifest digest."""
    work = tmp_path_factory.mktemp("credential-provider")
    with RegistryServer(work / "upstream") as upstream:
        build_feature_images(work / "layout", REPOSITORY, BUILDS)
        pusher = Pusher(upstream.url)
        pusher.layout(work / "layout", REPOSITORY)
        pusher.close()
        with httpx.Client(base_url=upstream.url) as direct:
            index = direct.get(
                f"/v2/{REPOSITORY}/manifests/latest", headers={"accept": ACCEPT_ALL}
            ).json()
        (expected,) = [
            entry["digest"]
            for entry in index["manifests"]
            if entry.get("platform", {}).get("features") == [f"cpu:{HOST_CPU}"]
        ]
        assert index["manifests"][0]["digest"] != expected
        (work / "hub").mkdir()
        config = {
            "upstream": {"url": upstream.url},
            "accounts": [{"login": "nodes", "password": PASSWORD, "profile_logins": True}],
        }
        with MetaHubServer(work / "hub", config) as hub:
            yield hub, expected


@pytest.mark.e2e
def test_skopeo_pulls_this_host_s_build_with_the_provider_s_answer(
    served: tuple[MetaHubServer, str], password_file: Path, tmp_path: Path
) -> None:
    hub, expected = served
    image = f"{hub.host}/{REPOSITORY}:latest"
    args = ["--account", "nodes", "--password-file", str(password_file), "--skip", "ht"]
    args += ["--cache-file", str(tmp_path / "features.json")]
    body = answer(provide(args, request(image)))
    creds = body["auth"][hub.host]
    assert creds["username"].startswith(f"nodes/cpu={HOST_CPU},")
    inspected = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        f"{creds['username']}:{creds['password']}",
        f"docker://{image}",
    )
    assert inspected.returncode == 0, inspected.stderr
    amd64 = [
        entry["digest"]
        for entry in json.loads(inspected.stdout)["manifests"]
        if entry["platform"]["architecture"] == "amd64"
    ]
    assert amd64 == [expected]
    copied = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        f"{creds['username']}:{creds['password']}",
        f"docker://{image}",
        f"dir:{tmp_path / 'copy'}",
    )
    assert copied.returncode == 0, copied.stderr
    manifest = (tmp_path / "copy" / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == expected
