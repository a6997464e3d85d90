"""Per-repository access against a real upstream (docker-registry), MetaHub in this process.

A machine type's `repositories:` patterns decide what it may pull: Basic auth and tokens alike
get `403 DENIED` outside them, naming the repository and the machine type (never another
type's patterns), and `/token` grants only what the patterns allow. Profile logins carry their
account's patterns. The patterns are edited through the management API like features.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from metahub.config import ConfigError, load_config
from tests.support.inprocess import InProcessHub
from tests.support.oci import ACCEPT_ALL
from tests.support.push import Pusher
from tests.support.servers import RegistryServer

ADMIN_TOKEN = "repository-access-admin-token"
SECRET_PATTERN = "secret/only-for-the-vault/**"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("repository-access")


@pytest.fixture(scope="module")
def upstream(workdir: Path, demo_layout: Path) -> Iterator[RegistryServer]:
    with RegistryServer(workdir / "upstream") as registry:
        pusher = Pusher(registry.url)
        for repository in ("qnib/bench", "other/bench", "qnib/deep/bench"):
            pusher.layout(demo_layout, "qnib/bench", into=repository)
        pusher.close()
        yield registry


def machine_type(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "login": name, "password": f"{name}-password", **extra}


@pytest.fixture(scope="module")
def hub(workdir: Path, upstream: RegistryServer) -> Iterator[InProcessHub]:
    registry = upstream.host
    config = {
        "upstream": {"url": upstream.url},
        "machine_types": [
            machine_type("limited", repositories=[f"{registry}/qnib/*"]),
            machine_type("vault", repositories=[f"{registry}/{SECRET_PATTERN}"]),
            machine_type("open", features=["cpu:skylake"]),
        ],
        "accounts": [
            {
                "login": "hpc",
                "password": "hpc-password",
                "profile_logins": True,
                "repositories": [f"{registry}/qnib/**"],
            }
        ],
        "admin": {"tokens": [ADMIN_TOKEN]},
    }
    with InProcessHub(workdir / "hub", config) as running:
        yield running


@pytest.fixture
def client(hub: InProcessHub) -> Iterator[httpx.Client]:
    with hub.client(headers={"accept": ACCEPT_ALL}) as http:
        yield http


def login(name: str) -> tuple[str, str]:
    return (name, f"{name}-password")


def only_error(response: httpx.Response) -> dict[str, Any]:
    errors = response.json()["errors"]
    assert len(errors) == 1
    assert set(errors[0]) == {"code", "message", "detail"}
    return dict(errors[0])


def token(client: httpx.Client, auth: tuple[str, str], *repositories: str) -> dict[str, Any]:
    params = [("service", "metahub")]
    params += [("scope", f"repository:{name}:pull") for name in repositories]
    response = client.get("/token", params=params, auth=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_basic_auth_inside_the_patterns_pulls(client: httpx.Client) -> None:
    response = client.get("/v2/qnib/bench/manifests/latest", auth=login("limited"))
    assert response.status_code == 200, response.text


def test_basic_auth_outside_the_patterns_is_denied_naming_repository_and_type(
    client: httpx.Client, upstream: RegistryServer
) -> None:
    for path in (
        "/v2/other/bench/manifests/latest",
        "/v2/qnib/deep/bench/manifests/latest",  # `*` stays within one component
        "/v2/other/bench/tags/list",
    ):
        response = client.get(path, auth=login("limited"))
        assert response.status_code == 403, (path, response.text)
        error = only_error(response)
        assert error["code"] == "DENIED"
        repository = path.removeprefix("/v2/").rsplit("/", 2)[0]
        assert f"{upstream.host}/{repository}" in error["message"]
        assert "'limited'" in error["message"]
        # Never another type's patterns, nor this type's own.
        assert "only-for-the-vault" not in response.text
        assert "qnib/*" not in response.text


def test_blobs_outside_the_patterns_are_denied_too(client: httpx.Client) -> None:
    index = client.get("/v2/qnib/bench/manifests/latest", auth=login("open"))
    assert index.status_code == 200
    first = index.json()["manifests"][0]["digest"]
    manifest = client.get(f"/v2/qnib/bench/manifests/{first}", auth=login("open"))
    config = manifest.json()["config"]["digest"]
    # Refused before the upstream is asked: a type without patterns is not.
    assert client.get(f"/v2/other/bench/blobs/{config}", auth=login("open")).status_code == 200
    denied = client.get(f"/v2/other/bench/blobs/{config}", auth=login("limited"))
    assert denied.status_code == 403
    assert only_error(denied)["code"] == "DENIED"
    allowed = client.get(f"/v2/qnib/bench/blobs/{config}", auth=login("limited"))
    assert allowed.status_code == 200


def test_a_type_without_patterns_pulls_everything(client: httpx.Client) -> None:
    for name in ("qnib/bench", "other/bench", "qnib/deep/bench"):
        response = client.get(f"/v2/{name}/manifests/latest", auth=login("open"))
        assert response.status_code == 200, (name, response.text)


def test_the_token_grants_only_allowed_repositories(client: httpx.Client) -> None:
    body = token(client, login("limited"), "qnib/bench", "other/bench", "qnib/deep/bench")
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "qnib/bench", "actions": ["pull"]}]
    headers = {"authorization": f"Bearer {body['token']}"}
    assert client.get("/v2/qnib/bench/manifests/latest", headers=headers).status_code == 200
    denied = client.get("/v2/other/bench/manifests/latest", headers=headers)
    assert denied.status_code == 403
    assert only_error(denied)["code"] == "DENIED"
    assert "'limited'" in only_error(denied)["message"]


def test_the_oauth_grant_lists_only_allowed_scopes(client: httpx.Client) -> None:
    response = client.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "limited",
            "password": "limited-password",
            "service": "metahub",
            "scope": "repository:other/bench:pull repository:qnib/bench:pull",
        },
    )
    assert response.status_code == 200
    assert response.json()["scope"] == "repository:qnib/bench:pull"


def test_a_token_for_an_allowed_repository_used_on_another_allowed_one_needs_its_scope(
    client: httpx.Client,
) -> None:
    """Patterns allow it, the token does not grant it: the client is sent for a new token."""
    body = token(client, login("open"), "qnib/bench")
    response = client.get(
        "/v2/other/bench/manifests/latest", headers={"authorization": f"Bearer {body['token']}"}
    )
    assert response.status_code == 401
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_profile_logins_carry_the_accounts_patterns(client: httpx.Client) -> None:
    auth = ("hpc/cpu=skylake", "hpc-password")
    assert client.get("/v2/qnib/deep/bench/manifests/latest", auth=auth).status_code == 200
    denied = client.get("/v2/other/bench/manifests/latest", auth=auth)
    assert denied.status_code == 403
    assert "'hpc/cpu=skylake'" in only_error(denied)["message"]
    body = token(client, auth, "qnib/bench", "other/bench")
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert [grant["name"] for grant in claims["access"]] == ["qnib/bench"]


def admin(hub: InProcessHub) -> httpx.Client:
    return hub.client(headers={"authorization": f"Bearer {ADMIN_TOKEN}"})


def test_the_management_api_edits_patterns_and_the_registry_follows(
    hub: InProcessHub, client: httpx.Client, upstream: RegistryServer
) -> None:
    registry = upstream.host
    with admin(hub) as api:
        created = api.post(
            "/api/v1/machine-types",
            json={"name": "edited", "repositories": [f"{registry}/other/*"]},
        )
        assert created.status_code == 201, created.text
        assert created.json()["repositories"] == [f"{registry}/other/*"]
        secret = api.post("/api/v1/machine-types/edited/credentials", json={}).json()
        auth = (secret["login"], secret["password"])
        assert client.get("/v2/other/bench/manifests/latest", auth=auth).status_code == 200
        assert client.get("/v2/qnib/bench/manifests/latest", auth=auth).status_code == 403

        changed = api.patch(
            "/api/v1/machine-types/edited", json={"repositories": [f"{registry}/qnib/**"]}
        )
        assert changed.status_code == 200
        assert client.get("/v2/other/bench/manifests/latest", auth=auth).status_code == 403
        assert client.get("/v2/qnib/bench/manifests/latest", auth=auth).status_code == 200

        # A patch without `repositories` keeps them; an empty list allows everything again.
        assert api.patch("/api/v1/machine-types/edited", json={"description": "x"}).json()[
            "repositories"
        ] == [f"{registry}/qnib/**"]
        cleared = api.patch("/api/v1/machine-types/edited", json={"repositories": []})
        assert cleared.json()["repositories"] == []
        assert client.get("/v2/other/bench/manifests/latest", auth=auth).status_code == 200

        listed = api.get("/api/v1/machine-types/limited").json()
        assert listed["repositories"] == [f"{registry}/qnib/*"]


@pytest.mark.parametrize(
    ("patterns", "field", "says"),
    [
        (["docker.io/**", "docker.io"], "repositories.1", "names no repository"),
        (["Docker.io/x"], "repositories.0", "lower-case"),
        (["docker.io/a**"], "repositories.0", "whole path component"),
    ],
)
def test_the_management_api_refuses_bad_patterns_naming_them(
    hub: InProcessHub, patterns: list[str], field: str, says: str
) -> None:
    with admin(hub) as api:
        response = api.post("/api/v1/machine-types", json={"name": "bad", "repositories": patterns})
    assert response.status_code == 422
    error = only_error(response)
    assert error["message"].startswith(f"{field}: ")
    assert says in error["message"]
    assert error["detail"][0]["field"] == field


def test_the_config_refuses_a_bad_pattern_naming_key_and_pattern(tmp_path: Path) -> None:
    path = tmp_path / "metahub.yaml"
    path.write_text(
        "upstream: {url: 127.0.0.1:5000}\n"
        "machine_types:\n"
        "  - {name: t, login: t, password: p, repositories: ['ghcr.io/acme/**', 'ghcr.io']}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "machine_types.0.repositories" in message
    assert "'ghcr.io'" in message


def test_an_oci_layout_upstream_is_the_registry_named_local(
    tmp_path: Path, demo_layout: Path
) -> None:
    config = {
        "upstream": {"path": str(demo_layout)},
        "machine_types": [machine_type("local-only", repositories=["local/qnib/**"])],
        "anonymous": {"machine_type": "local-only"},
    }
    with InProcessHub(tmp_path, config) as running, running.client() as http:
        anonymous = http.get("/v2/qnib/bench/manifests/latest", headers={"accept": ACCEPT_ALL})
        assert anonymous.status_code == 200
        denied = http.get("/v2/elsewhere/bench/manifests/latest")
        assert denied.status_code == 403
        assert "local/elsewhere/bench" in only_error(denied)["message"]
