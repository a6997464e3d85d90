"""`metahub push` against real registries (Debian's docker-registry), read back with skopeo.

Per-target images (`qnib/plain-featuretest:cpu-skylake`, `:cpu-broadwell`) go into a registry
over its HTTP API; `metahub push` runs as a real process and makes the feature-tagged index.
What it did is checked independently: the index with `skopeo inspect --raw` and hashlib, blobs
with HEAD requests, uploads and mounts in the registry's own request log. Finally a real
`metahub serve` in front of the registry gives two machine types different entries.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from metahub.demo.images import FeatureImage, build_feature_images
from tests.support.metahub_server import MetaHubServer
from tests.support.oci import DOCKER_LIST, OCI_INDEX, OCI_MANIFEST, sha256
from tests.support.push import Pusher
from tests.support.servers import RegistryServer, skopeo

ACCEPT = f"{OCI_INDEX}, {DOCKER_LIST}, {OCI_MANIFEST}"
MEMBERS = "qnib/plain-featuretest"
BUILDS = (
    FeatureImage("cpu-skylake", "skylake", ("cpu:skylake",), ">> optimized for cpu:skylake"),
    FeatureImage(
        "cpu-broadwell", "broadwell", ("cpu:broadwell",), ">> optimized for cpu:broadwell"
    ),
)
AUTH = ("publisher", "publisher-secret")


@dataclass(frozen=True)
class Member:
    digest: str
    size: int
    blobs: tuple[str, ...]  # config and layer digests


@dataclass(frozen=True)
class Setup:
    work: Path
    source: RegistryServer
    members: dict[str, Member]  # tag -> what the registry holds for it


def read_member(registry: RegistryServer, tag: str, auth: tuple[str, str] | None = None) -> Member:
    with httpx.Client(base_url=registry.url, auth=auth) as http:
        response = http.get(f"/v2/{MEMBERS}/manifests/{tag}", headers={"accept": OCI_MANIFEST})
        response.raise_for_status()
    document = json.loads(response.content)
    blobs = (document["config"]["digest"], *(layer["digest"] for layer in document["layers"]))
    return Member(sha256(response.content), len(response.content), blobs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("publish-push")
    with RegistryServer(work / "source") as source:
        build_feature_images(work / "layout", MEMBERS, BUILDS)
        pusher = Pusher(source.url)
        pusher.layout(work / "layout", MEMBERS)
        pusher.close()
        members = {build.tag: read_member(source, build.tag) for build in BUILDS}
        yield Setup(work, source, members)


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def seed_spec(host: str, target: str, *, source_host: str | None = None) -> dict[str, Any]:
    """The seed's manifest.yml, on a local registry."""
    source_host = source_host or host
    return {
        "image": f"{host}/{target}:latest",
        "tags": ["v1"],
        "manifests": [
            {
                "image": f"{source_host}/{MEMBERS}:cpu-skylake",
                "platform": {"architecture": "amd64", "os": "linux", "features": ["cpu:skylake"]},
            },
            {
                "image": f"{source_host}/{MEMBERS}:cpu-broadwell",
                "platform": {"architecture": "amd64", "os": "linux", "features": ["cpu:broadwell"]},
            },
        ],
    }


def metahub_push(
    spec: Path, *args: str, docker_config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONFIG"}
    env["DOCKER_CONFIG"] = str(docker_config or spec.parent / "no-docker-config")
    return subprocess.run(
        [sys.executable, "-m", "metahub", "push", str(spec), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def raw(ref: str, creds: str | None = None) -> bytes:
    args = ["inspect", "--raw", "--tls-verify=false"]
    if creds:
        args += ["--creds", creds]
    result = skopeo(*args, f"docker://{ref}")
    assert result.returncode == 0, result.stderr
    return result.stdout.encode()


_LOG_LINE = re.compile(
    r'http\.request\.method=(\w+) .*?http\.request\.uri="?([^" ]+)"? .*?'
    r"http\.response\.status=(\d+)"
)


def requests(registry: RegistryServer) -> list[tuple[str, str, int]]:
    """(method, uri, status) of every request the registry logged as completed."""
    found = []
    for line in registry.log_path.read_text().splitlines():
        if 'msg="response completed"' in line:
            match = _LOG_LINE.search(line)
            if match:
                found.append((match.group(1), match.group(2), int(match.group(3))))
    return found


def uploads(registry: RegistryServer, repository: str) -> list[tuple[str, str, int]]:
    """Blob uploads into `repository`: upload starts and mounts (POST), data sent (PUT/PATCH)."""
    prefix = f"/v2/{repository}/blobs/uploads/"
    return [r for r in requests(registry) if r[1].startswith(prefix)]


def blob_present(registry: RegistryServer, repository: str, digest: str, auth: Any = None) -> bool:
    with httpx.Client(base_url=registry.url, auth=auth) as http:
        return http.head(f"/v2/{repository}/blobs/{digest}").status_code == 200


def pushed_refs(stdout: str) -> dict[str, str]:
    """`host/repo:tag@digest` lines -> {tag: digest}."""
    refs = {}
    for line in stdout.split():
        name, _, digest = line.partition("@")
        refs[name.rpartition(":")[2]] = digest
    return refs


@pytest.mark.e2e
def test_push_keeps_features_makes_every_tag_and_mounts_members(setup: Setup) -> None:
    host = setup.source.host
    spec = write_spec(setup.work / "seed.yaml", seed_spec(host, "qnib/bench"))
    result = metahub_push(spec)
    assert result.returncode == 0, result.stderr
    latest = raw(f"{host}/qnib/bench:latest")
    assert raw(f"{host}/qnib/bench:v1") == latest
    assert pushed_refs(result.stdout) == {"latest": sha256(latest), "v1": sha256(latest)}
    index = json.loads(latest)
    assert index["mediaType"] == OCI_INDEX
    skylake, broadwell = setup.members["cpu-skylake"], setup.members["cpu-broadwell"]
    assert index["manifests"] == [
        {"mediaType": OCI_MANIFEST, "digest": skylake.digest, "size": skylake.size,
         "platform": {"architecture": "amd64", "os": "linux", "features": ["cpu:skylake"]}},
        {"mediaType": OCI_MANIFEST, "digest": broadwell.digest, "size": broadwell.size,
         "platform": {"architecture": "amd64", "os": "linux", "features": ["cpu:broadwell"]}},
    ]  # fmt: skip
    # Cross-repository members: every blob now in the target repository, by mount only.
    for member in (skylake, broadwell):
        for digest in member.blobs:
            assert blob_present(setup.source, "qnib/bench", digest)
    posts = uploads(setup.source, "qnib/bench")
    assert posts, "no mount requests reached the registry"
    assert all(
        method == "POST" and "mount=" in uri and status == 201 for method, uri, status in posts
    )
    assert len(posts) == len({*skylake.blobs, *broadwell.blobs})
    assert "4 mounted, 0 copied, 0 already there" in result.stderr

    # Re-push: same digest, nothing uploaded or mounted, tags left as they are.
    before = len(requests(setup.source))
    again = metahub_push(spec)
    assert again.returncode == 0, again.stderr
    assert pushed_refs(again.stdout) == pushed_refs(result.stdout)
    assert "0 mounted, 0 copied, 4 already there; 0 manifests pushed" in again.stderr
    after = requests(setup.source)[before:]
    assert not [r for r in after if r[0] in ("POST", "PUT", "PATCH", "DELETE")]
    assert raw(f"{host}/qnib/bench:latest") == latest


@pytest.mark.e2e
def test_dry_run_prints_the_index_and_pushes_nothing(setup: Setup) -> None:
    host = setup.source.host
    spec = write_spec(setup.work / "dry.yaml", seed_spec(host, "qnib/dry"))
    before = len(requests(setup.source))
    result = metahub_push(spec, "--dry-run")
    assert result.returncode == 0, result.stderr
    printed = result.stdout.encode().removesuffix(b"\n")
    index = json.loads(printed)
    assert [m["platform"]["features"] for m in index["manifests"]] == [
        ["cpu:skylake"],
        ["cpu:broadwell"],
    ]
    assert sha256(printed) in result.stderr
    writes = [r for r in requests(setup.source)[before:] if r[0] not in ("GET", "HEAD")]
    assert writes == []
    with httpx.Client(base_url=setup.source.url) as http:
        assert (
            http.get("/v2/qnib/dry/manifests/latest", headers={"accept": ACCEPT}).status_code == 404
        )
    # What it printed is what a push then stores, byte for byte.
    pushed = metahub_push(spec)
    assert pushed.returncode == 0, pushed.stderr
    assert raw(f"{host}/qnib/dry:latest") == printed


@pytest.mark.e2e
def test_type_docker_pushes_a_docker_manifest_list(setup: Setup) -> None:
    host = setup.source.host
    spec = write_spec(setup.work / "docker.yaml", seed_spec(host, "qnib/bench-docker"))
    result = metahub_push(spec, "--type", "docker")
    assert result.returncode == 0, result.stderr
    data = raw(f"{host}/qnib/bench-docker:latest")
    index = json.loads(data)
    assert index["mediaType"] == DOCKER_LIST
    assert [m["platform"]["features"] for m in index["manifests"]] == [
        ["cpu:skylake"],
        ["cpu:broadwell"],
    ]
    with httpx.Client(base_url=setup.source.url) as http:
        head = http.head("/v2/qnib/bench-docker/manifests/v1", headers={"accept": ACCEPT})
    assert head.headers["content-type"] == DOCKER_LIST
    assert head.headers["docker-content-digest"] == sha256(data)


@pytest.mark.e2e
def test_a_member_that_is_an_index_is_expanded(setup: Setup) -> None:
    host = setup.source.host
    # build_feature_images tagged an index over both builds as :latest, features included.
    spec = write_spec(
        setup.work / "expand.yaml",
        {
            "image": f"{host}/qnib/expanded",
            "manifests": [
                {"image": f"{host}/{MEMBERS}:latest"},
                {"image": f"{host}/{MEMBERS}:latest", "platform": {"features": ["nvcap:8.0"]}},
            ],
        },
    )
    result = metahub_push(spec)
    assert result.returncode == 0, result.stderr
    index = json.loads(raw(f"{host}/qnib/expanded:latest"))
    skylake, broadwell = setup.members["cpu-skylake"], setup.members["cpu-broadwell"]
    assert [(m["digest"], m["platform"].get("features")) for m in index["manifests"]] == [
        (skylake.digest, ["cpu:skylake"]),
        (broadwell.digest, ["cpu:broadwell"]),
        (skylake.digest, ["cpu:skylake", "nvcap:8.0"]),
        (broadwell.digest, ["cpu:broadwell", "nvcap:8.0"]),
    ]
    with httpx.Client(base_url=setup.source.url) as http:
        for digest in (skylake.digest, broadwell.digest):
            got = http.get(f"/v2/qnib/expanded/manifests/{digest}", headers={"accept": ACCEPT})
            assert got.status_code == 200 and sha256(got.content) == digest


@pytest.mark.e2e
def test_members_on_another_registry_are_copied(setup: Setup, tmp_path: Path) -> None:
    with RegistryServer(tmp_path / "target") as target:
        spec = write_spec(
            tmp_path / "copy.yaml",
            seed_spec(target.host, "hpc/bench", source_host=setup.source.host),
        )
        result = metahub_push(spec)
        assert result.returncode == 0, result.stderr
        assert "0 mounted, 4 copied, 0 already there; 2 manifests pushed" in result.stderr
        sent = uploads(target, "hpc/bench")
        puts = [r for r in sent if r[0] == "PUT"]
        assert len(puts) == 4 and all(status == 201 for _, _, status in puts)
        assert not [r for r in sent if "mount=" in r[1]]
        for member in setup.members.values():
            for digest in member.blobs:
                assert blob_present(target, "hpc/bench", digest)
        index = json.loads(raw(f"{target.host}/hpc/bench:latest"))
        assert [m["digest"] for m in index["manifests"]] == [
            setup.members["cpu-skylake"].digest,
            setup.members["cpu-broadwell"].digest,
        ]
        # The copies are the very images: skopeo pulls one by digest and gets the same bytes.
        copied = raw(f"{target.host}/hpc/bench@{setup.members['cpu-skylake'].digest}")
        assert sha256(copied) == setup.members["cpu-skylake"].digest


@pytest.fixture
def auth_source(tmp_path: Path, setup: Setup) -> Iterator[RegistryServer]:
    """A registry with htpasswd auth holding the per-target images."""
    with RegistryServer(tmp_path / "auth", htpasswd=dict([AUTH])) as registry:
        pusher = Pusher(registry.url, AUTH)
        pusher.layout(setup.work / "layout", MEMBERS)
        pusher.close()
        yield registry


@pytest.mark.e2e
def test_creds_log_in_to_the_registry(auth_source: RegistryServer, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "auth.yaml", seed_spec(auth_source.host, "qnib/bench"))
    refused = metahub_push(spec)
    assert refused.returncode == 1
    assert f"registry {auth_source.host} refused GET" in refused.stderr
    assert "anonymously" in refused.stderr
    wrong = metahub_push(spec, "--creds", f"{AUTH[0]}:wrong")
    assert wrong.returncode == 1 and f"as {AUTH[0]}" in wrong.stderr
    result = metahub_push(spec, "--creds", ":".join(AUTH))
    assert result.returncode == 0, result.stderr
    index = json.loads(raw(f"{auth_source.host}/qnib/bench:v1", ":".join(AUTH)))
    assert [m["platform"]["features"] for m in index["manifests"]] == [
        ["cpu:skylake"],
        ["cpu:broadwell"],
    ]


@pytest.mark.e2e
def test_credentials_come_from_docker_config_json(
    auth_source: RegistryServer, tmp_path: Path
) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(":".join(AUTH).encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {auth_source.host: {"auth": auth}}}))
    spec = write_spec(tmp_path / "auth.yaml", seed_spec(auth_source.host, "qnib/from-config"))
    result = metahub_push(spec, docker_config=config)
    assert result.returncode == 0, result.stderr
    assert "4 mounted" in result.stderr
    data = raw(f"{auth_source.host}/qnib/from-config:latest", ":".join(AUTH))
    assert pushed_refs(result.stdout)["latest"] == sha256(data)


def test_a_missing_member_fails_naming_it(setup: Setup) -> None:
    host = setup.source.host
    spec_data = seed_spec(host, "qnib/broken")
    spec_data["manifests"][1]["image"] = f"{host}/{MEMBERS}:cpu-nonexistent"
    spec = write_spec(setup.work / "broken.yaml", spec_data)
    result = metahub_push(spec)
    assert result.returncode == 1
    assert f"{MEMBERS}:cpu-nonexistent is not in registry {host}" in result.stderr
    with httpx.Client(base_url=setup.source.url) as http:
        got = http.get("/v2/qnib/broken/manifests/latest", headers={"accept": ACCEPT})
        assert got.status_code == 404


def test_a_bad_spec_fails_naming_the_key(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "bad.yaml",
        {"image": "127.0.0.1:1/a/b", "manifests": [{"image": "a/c", "platform": {"arch": "x"}}]},
    )
    result = metahub_push(spec)
    assert result.returncode == 1
    assert "manifests.0.platform.arch: unknown key" in result.stderr


# -- pulled through MetaHub by two machine types ----------------------------------------------

MACHINES = {"type-skylake": "cpu:skylake", "type-broadwell": "cpu:broadwell"}


@pytest.fixture(scope="module")
def hub(setup: Setup) -> Iterator[MetaHubServer]:
    spec = write_spec(setup.work / "hub.yaml", seed_spec(setup.source.host, "qnib/served"))
    result = metahub_push(spec)
    assert result.returncode == 0, result.stderr
    (setup.work / "hub").mkdir()
    config = {
        "upstream": {"url": setup.source.url},
        "machine_types": [
            {"name": login, "login": login, "password": login, "features": [feature]}
            for login, feature in MACHINES.items()
        ],
    }
    with MetaHubServer(setup.work / "hub", config) as server:
        yield server


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("login", "tag"), [("type-skylake", "cpu-skylake"), ("type-broadwell", "cpu-broadwell")]
)
def test_two_machine_types_pull_their_own_entry_through_metahub(
    setup: Setup, hub: MetaHubServer, tmp_path: Path, login: str, tag: str
) -> None:
    creds = f"{login}:{login}"
    index = json.loads(raw(f"{hub.host}/qnib/served:latest", creds))
    member = setup.members[tag]
    assert [m["digest"] for m in index["manifests"]] == [member.digest]
    assert index["manifests"][0]["platform"]["features"] == [MACHINES[login]]
    copied = skopeo(
        "copy", "--src-tls-verify=false", "--src-creds", creds,
        f"docker://{hub.host}/qnib/served:v1", f"dir:{tmp_path / 'copy'}",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert sha256((tmp_path / "copy" / "manifest.json").read_bytes()) == member.digest
    for digest in member.blobs:
        assert (tmp_path / "copy" / digest.removeprefix("sha256:")).is_file()


# -- a registry with token authentication (Bearer), as Docker Hub and most others do ----------

TOKEN_SERVICE = "metahub-test-registry"
TOKEN_ISSUER = "metahub-test-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """The Docker token protocol: Basic credentials in, an RS256 JWT granting the scopes the
    ACL allows out, signed with a key whose self-signed certificate the registry trusts.
    Signing uses the openssl command, so no crypto library is needed."""

    def __init__(self, tmp: Path, users: dict[str, str], acl: dict[str, dict[str, str]]) -> None:
        self.tmp, self.users, self.acl = tmp, users, acl
        # Like registries that refuse cross-repository mounts: a request that wants push on one
        # repository and pull on another gets the push scope only.
        self.refuse_mounts = False
        self.key, self.cert = tmp / "token-key.pem", tmp / "token-cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=metahub-test-token", "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        self.x5c = base64.b64encode(der).decode()
        self.grants: list[tuple[str | None, list[str]]] = []  # (user, granted scopes)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                user = server.authenticate(self.headers.get("Authorization"))
                if user is False:
                    self.send_response(401)
                    self.end_headers()
                    return
                query = parse_qs(urlsplit(self.path).query)
                body = json.dumps(server.issue(user, query.get("scope", []))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.http.server_address[1]}/token"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def authenticate(self, header: str | None) -> str | bool | None:
        if not header:
            return None  # anonymous: a token with no access
        user, _, password = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
        return user if self.users.get(user) == password else False

    def issue(self, user: str | None, scopes: list[str]) -> dict[str, Any]:
        access, granted = [], []
        if self.refuse_mounts and any(scope.endswith(",push") for scope in scopes):
            scopes = [scope for scope in scopes if scope.endswith(",push")]
        for scope in scopes:
            kind, name, actions = scope.split(":")
            allowed = set(self.acl.get(user or "", {}).get(name, "").split(","))
            given = [a for a in actions.split(",") if a in allowed]
            if given:
                access.append({"type": kind, "name": name, "actions": given})
                granted.append(f"{kind}:{name}:{','.join(given)}")
        self.grants.append((user, granted))
        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER, "sub": user or "", "aud": TOKEN_SERVICE, "exp": now + 300,
            "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access,
        }  # fmt: skip
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(), check=True, capture_output=True,
        ).stdout  # fmt: skip
        token = f"{signing_input}.{_b64url(signature)}"
        return {"token": token, "access_token": token, "expires_in": 300}

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def token_registry(tmp_path: Path, setup: Setup) -> Iterator[tuple[RegistryServer, TokenServer]]:
    users = dict([AUTH])
    acl = {AUTH[0]: {MEMBERS: "pull,push", "qnib/bench": "pull,push"}}
    tokens = TokenServer(tmp_path, users, acl)
    registry = RegistryServer(tmp_path / "token-registry")
    registry.storage.mkdir(parents=True)
    registry.config_path.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "info", "fields": {"service": "registry"}},
                "storage": {"filesystem": {"rootdirectory": str(registry.storage)}},
                "http": {"addr": registry.host, "secret": "metahub-tests"},
                "auth": {
                    "token": {
                        "realm": tokens.realm,
                        "service": TOKEN_SERVICE,
                        "issuer": TOKEN_ISSUER,
                        "rootcertbundle": str(tokens.cert),
                    }
                },
            }
        )
    )
    try:
        with registry:
            for build in BUILDS:  # skopeo, an independent client, fills it through the tokens
                copied = skopeo(
                    "copy", "--dest-tls-verify=false", "--dest-creds", ":".join(AUTH),
                    f"oci:{setup.work / 'layout'}:{MEMBERS}:{build.tag}",
                    f"docker://{registry.host}/{MEMBERS}:{build.tag}",
                )  # fmt: skip
                assert copied.returncode == 0, copied.stderr
            yield registry, tokens
    finally:
        tokens.close()


@pytest.mark.e2e
def test_push_through_token_authentication_mounts_with_both_scopes(
    token_registry: tuple[RegistryServer, TokenServer], tmp_path: Path
) -> None:
    registry, tokens = token_registry
    spec = write_spec(tmp_path / "token.yaml", seed_spec(registry.host, "qnib/bench"))
    tokens.grants.clear()
    result = metahub_push(spec, "--creds", ":".join(AUTH))
    assert result.returncode == 0, result.stderr
    assert "4 mounted, 0 copied, 0 already there; 2 manifests pushed" in result.stderr
    granted = [scopes for user, scopes in tokens.grants if user == AUTH[0]]
    # One token for the mounts: push on the target and pull on the member repository.
    assert sorted(["repository:qnib/bench:pull,push", f"repository:{MEMBERS}:pull"]) in granted
    index = json.loads(raw(f"{registry.host}/qnib/bench:v1", ":".join(AUTH)))
    assert [m["platform"]["features"] for m in index["manifests"]] == [
        ["cpu:skylake"],
        ["cpu:broadwell"],
    ]
    mounts = [r for r in uploads(registry, "qnib/bench") if "mount=" in r[1]]
    assert len(mounts) == 4 and all(status == 201 for _, _, status in mounts)
    # Without a login, the token service grants nothing and the registry says so.
    anonymous = metahub_push(spec)
    assert anonymous.returncode == 1
    assert "anonymously" in anonymous.stderr


@pytest.mark.e2e
def test_a_refused_mount_falls_back_to_copying(
    token_registry: tuple[RegistryServer, TokenServer], tmp_path: Path
) -> None:
    registry, tokens = token_registry
    tokens.refuse_mounts = True
    spec = write_spec(tmp_path / "token.yaml", seed_spec(registry.host, "qnib/bench"))
    result = metahub_push(spec, "--creds", ":".join(AUTH))
    assert result.returncode == 0, result.stderr
    assert "0 mounted, 4 copied, 0 already there; 2 manifests pushed" in result.stderr
    sent = uploads(registry, "qnib/bench")
    # Refused requests are only in the registry's access log (each mount: asked, token, asked).
    refused = re.findall(
        r'"POST /v2/qnib/bench/blobs/uploads/\?mount=\S+ HTTP/1.1" (\d+)', registry.log_tail(10**7)
    )
    assert refused == ["401"] * 8
    assert not [r for r in sent if "mount=" in r[1]]
    assert len([r for r in sent if r[0] == "PUT" and r[2] == 201]) == 4
    index = json.loads(raw(f"{registry.host}/qnib/bench:latest", ":".join(AUTH)))
    assert [m["platform"]["features"] for m in index["manifests"]] == [
        ["cpu:skylake"],
        ["cpu:broadwell"],
    ]
