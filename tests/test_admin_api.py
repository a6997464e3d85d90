"""The management API (`/api/v1`) of the app `metahub serve` runs, and its effects on the registry.

The hub is tests/support/admin_hub.py's, in this process. What a machine type is served is
checked by pulling through the registry side, with the expected entries read from the demo
layout's own files.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.admin_hub import ADMIN_TOKEN, CONFIG_TYPE, IMAGE, Hub, admin_hub_config
from tests.support.demo import demo_entries
from tests.support.inprocess import InProcessHub
from tests.support.oci import ACCEPT_ALL

# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("admin-api")


@pytest.fixture(scope="module")
def layout(demo_layout: Path) -> Path:
    return demo_layout


@pytest.fixture(scope="module")
def entries(layout: Path) -> dict[str, str]:
    return demo_entries(layout)


@pytest.fixture(scope="module")
def anon(admin_hub: Hub) -> Iterator[httpx.Client]:
    """A client with no credentials."""
    with admin_hub.client(timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def api(admin_hub: Hub) -> Iterator[httpx.Client]:
    """A client of /api/v1 with the config's admin token."""
    with admin_hub.client(
        base_url=admin_hub.url + "/api/v1",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    ) as http:
        yield http


# -- helpers ----------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The single error of a registry-shaped error body."""
    body = response.json()
    assert list(body) == ["errors"], body
    (error,) = body["errors"]
    assert set(error) == {"code", "message", "detail"}, error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


def check_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = error_of(response)
    assert error["code"] == code, error
    return error


def check_field_error(response: httpx.Response, field: str) -> None:
    error = check_error(response, 422, "INVALID_REQUEST")
    assert field in error["message"], error
    assert [item["field"] for item in error["detail"]] == [field], error


def new_type(api: httpx.Client, features: list[str] | None = None, **extra: Any) -> str:
    name = unique("mt")
    body = {"name": name, "features": ["cpu:broadwell"] if features is None else features}
    response = api.post("/machine-types", json={**body, **extra})
    assert response.status_code == 201, response.text
    return name


def new_credential(api: httpx.Client, machine_type: str, **body: Any) -> dict[str, Any]:
    response = api.post(f"/machine-types/{machine_type}/credentials", json=body)
    assert response.status_code == 201, response.text
    issued = response.json()
    assert set(issued) == {"id", "login", "password", "docker_login"}
    return dict(issued)


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def registry_token(anon: httpx.Client, login: str, password: str) -> httpx.Response:
    return anon.get(
        "/token",
        params={"service": "metahub", "scope": "repository:qnib/bench:pull"},
        headers={"authorization": basic(login, password)},
    )


def get_manifest(
    anon: httpx.Client, authorization: str, reference: str = "latest"
) -> httpx.Response:
    return anon.get(
        f"/v2/qnib/bench/manifests/{reference}",
        headers={"authorization": authorization, "accept": ACCEPT_ALL},
    )


def pull(anon: httpx.Client, login: str, password: str) -> httpx.Response:
    """The token flow as docker runs it: a token for the scope, then the manifest by tag."""
    issued = registry_token(anon, login, password)
    if issued.status_code != 200:
        return issued
    return get_manifest(anon, f"Bearer {issued.json()['token']}")


def chosen(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [entry["digest"] for entry in json.loads(response.content)["manifests"]]


def audit_actions(api: httpx.Client, target: str) -> list[str]:
    response = api.get("/audit", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [entry["action"] for entry in reversed(response.json()) if entry["target"] == target]


def credential_ids(api: httpx.Client, path: str, **params: str) -> set[str]:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return {c["id"] for c in response.json()}


# -- machine types ----------------------------------------------------------------------------


def test_machine_type_create_get_list_update_delete(api: httpx.Client) -> None:
    name = unique("crud")
    created = api.post(
        "/machine-types",
        json={
            "name": name,
            "features": ["cpu:zen3", "nvcap:8.0"],
            "mode": "exact",
            "platforms": ["linux/amd64"],
            "repositories": ["docker.io/library/*"],
            "description": "A100 nodes",
        },
    )
    assert created.status_code == 201, created.text
    expected = {
        "name": name,
        "features": ["cpu:zen3", "nvcap:8.0"],
        "mode": "exact",
        "platforms": ["linux/amd64"],
        "repositories": ["docker.io/library/*"],
        "description": "A100 nodes",
        "revision": 1,
        "config_managed": False,
        "credentials": 0,
    }
    assert created.json() == expected
    assert api.get(f"/machine-types/{name}").json() == expected
    listed = api.get("/machine-types").json()
    assert expected in listed
    assert [t["name"] for t in listed] == sorted(t["name"] for t in listed)

    changed = api.patch(f"/machine-types/{name}", json={"features": ["cpu:zen2"], "mode": "best"})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {**expected, "features": ["cpu:zen2"], "mode": "best", "revision": 2}
    described = api.patch(f"/machine-types/{name}", json={"description": "", "platforms": []})
    assert described.json()["revision"] == 3
    assert described.json()["description"] == "" and described.json()["platforms"] == []
    assert described.json()["features"] == ["cpu:zen2"]  # what is not given stays
    assert described.json()["repositories"] == ["docker.io/library/*"]
    opened = api.patch(f"/machine-types/{name}", json={"repositories": []})
    assert opened.json()["repositories"] == [] and opened.json()["revision"] == 4

    deleted = api.delete(f"/machine-types/{name}")
    assert deleted.status_code == 204 and deleted.content == b""
    check_error(api.get(f"/machine-types/{name}"), 404, "NOT_FOUND")
    assert name not in [t["name"] for t in api.get("/machine-types").json()]
    assert audit_actions(api, name) == [
        "machine_type.create",
        "machine_type.update",
        "machine_type.update",
        "machine_type.update",
        "machine_type.delete",
    ]


def test_defaults_of_a_new_machine_type(api: httpx.Client) -> None:
    name = unique("bare")
    created = api.post("/machine-types", json={"name": name})
    assert created.status_code == 201, created.text
    assert created.json() == {
        "name": name,
        "features": [],
        "mode": "best",
        "platforms": [],
        "repositories": [],
        "description": "",
        "revision": 1,
        "config_managed": False,
        "credentials": 0,
    }


def test_update_that_changes_nothing_is_no_new_revision(api: httpx.Client) -> None:
    name = new_type(api, ["cpu:broadwell"], description="same")
    before = api.get(f"/machine-types/{name}").json()
    for body in ({}, {"features": ["cpu:broadwell"]}, {"description": "same", "mode": "best"}):
        response = api.patch(f"/machine-types/{name}", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == before
    assert audit_actions(api, name) == ["machine_type.create"]
    assert api.patch(f"/machine-types/{name}", json={"mode": "exact"}).json()["revision"] == 2


def test_config_machine_type_is_listed_read_only(api: httpx.Client) -> None:
    found = api.get(f"/machine-types/{CONFIG_TYPE['name']}")
    assert found.status_code == 200, found.text
    assert found.json()["config_managed"] is True
    assert found.json()["features"] == CONFIG_TYPE["features"]
    assert found.json()["credentials"] == 1
    name = CONFIG_TYPE["name"]
    error = check_error(
        api.patch(f"/machine-types/{name}", json={"description": "x"}), 409, "CONFLICT"
    )
    assert "config" in error["message"]
    check_error(api.delete(f"/machine-types/{name}"), 409, "CONFLICT")
    assert api.get(f"/machine-types/{name}").json() == found.json()


def test_duplicate_machine_type_is_a_conflict(api: httpx.Client) -> None:
    name = new_type(api)
    error = check_error(api.post("/machine-types", json={"name": name}), 409, "CONFLICT")
    assert name in error["message"]
    check_error(api.post("/machine-types", json={"name": CONFIG_TYPE["name"]}), 409, "CONFLICT")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"features": ["cpu"]}, "features.0"),
        ({"features": ["cpu:broadwell", "nvcap"]}, "features.1"),
        ({"features": "cpu:broadwell"}, "features"),
        ({"platforms": ["linux"]}, "platforms.0"),
        ({"platforms": ["linux/amd64", "a/b/c/d"]}, "platforms.1"),
        ({"repositories": ["docker.io"]}, "repositories.0"),
        ({"repositories": ["docker.io/**", "ghcr.io/a**"]}, "repositories.1"),
        ({"mode": "fastest"}, "mode"),
        ({"name": "has space"}, "name"),
        ({"name": "-leading-dash"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"colour": "red"}, "colour"),
        ({"description": 5}, "description"),
    ],
)
def test_invalid_machine_type_names_the_field(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    name = unique("invalid")
    check_field_error(api.post("/machine-types", json={"name": name, **body}), field)
    listed = [t["name"] for t in api.get("/machine-types").json()]
    assert body.get("name", name) not in listed


def test_missing_name_is_named(api: httpx.Client) -> None:
    check_field_error(api.post("/machine-types", json={"features": []}), "name")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"features": ["nope"]}, "features.0"),
        ({"platforms": ["linux"]}, "platforms.0"),
        ({"repositories": ["ghcr.io//x"]}, "repositories.0"),
        ({"mode": "fastest"}, "mode"),
        ({"name": "renamed"}, "name"),
    ],
)
def test_invalid_update_names_the_field_and_changes_nothing(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    name = new_type(api)
    before = api.get(f"/machine-types/{name}").json()
    check_field_error(api.patch(f"/machine-types/{name}", json=body), field)
    assert api.get(f"/machine-types/{name}").json() == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/machine-types/{x}", None),
        ("PATCH", "/machine-types/{x}", {"description": "x"}),
        ("DELETE", "/machine-types/{x}", None),
        ("GET", "/machine-types/{x}/credentials", None),
        ("POST", "/machine-types/{x}/credentials", {}),
        ("GET", "/credentials?machine_type={x}", None),
    ],
)
def test_unknown_machine_type_is_404(
    api: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    name = unique("missing")
    response = api.request(method, path.format(x=name), json=body)
    error = check_error(response, 404, "NOT_FOUND")
    assert name in error["message"]


def test_deleting_a_type_deletes_its_credentials_and_their_tokens(
    api: httpx.Client, anon: httpx.Client
) -> None:
    name = new_type(api)
    issued = new_credential(api, name)
    token = registry_token(anon, issued["login"], issued["password"]).json()["token"]
    assert get_manifest(anon, f"Bearer {token}").status_code == 200
    assert api.delete(f"/machine-types/{name}").status_code == 204
    check_error(api.get(f"/credentials/{issued['id']}"), 404, "NOT_FOUND")
    check_error(get_manifest(anon, f"Bearer {token}"), 401, "UNAUTHORIZED")
    check_error(registry_token(anon, issued["login"], issued["password"]), 401, "UNAUTHORIZED")


def test_changed_features_change_what_the_type_is_served(
    api: httpx.Client, anon: httpx.Client, entries: dict[str, str]
) -> None:
    name = new_type(api, ["cpu:broadwell"])
    issued = new_credential(api, name)
    token = registry_token(anon, issued["login"], issued["password"]).json()["token"]
    first = get_manifest(anon, f"Bearer {token}")
    assert chosen(first) == [entries["cpu:broadwell"], entries["arm64"]]

    revision = api.patch(f"/machine-types/{name}", json={"features": ["cpu:skylake"]})
    assert revision.json()["revision"] == 2
    second = get_manifest(anon, f"Bearer {token}")  # the same token: it names the type
    assert chosen(second) == [entries["cpu:skylake"], entries["arm64"]]
    assert second.headers["docker-content-digest"] != first.headers["docker-content-digest"]

    api.patch(f"/machine-types/{name}", json={"features": []})
    assert chosen(get_manifest(anon, f"Bearer {token}")) == [entries[""], entries["arm64"]]
    api.patch(f"/machine-types/{name}", json={"features": ["cpu:broadwell"]})
    again = get_manifest(anon, f"Bearer {token}")
    assert again.content == first.content

    # The first answer stays retrievable by its digest, as clients that pinned it expect.
    by_digest = get_manifest(anon, f"Bearer {token}", first.headers["docker-content-digest"])
    assert by_digest.status_code == 200 and by_digest.content == first.content


def test_platforms_of_a_type_take_effect(
    api: httpx.Client, anon: httpx.Client, entries: dict[str, str]
) -> None:
    name = new_type(api, ["cpu:skylake"], platforms=["linux/amd64"])
    issued = new_credential(api, name)
    assert chosen(pull(anon, issued["login"], issued["password"])) == [entries["cpu:skylake"]]


# -- credentials ------------------------------------------------------------------------------


def test_credential_create_list_get_never_show_the_secret(
    api: httpx.Client, anon: httpx.Client, admin_hub: Hub
) -> None:
    name = new_type(api)
    issued = new_credential(api, name)
    assert issued["login"].startswith(f"{name}-")
    assert len(issued["password"]) >= 24
    assert issued["docker_login"] == (
        f"docker login -u {issued['login']} --password-stdin {admin_hub.host}"
    )
    named = new_credential(api, name, login="rack7.node@lab")
    assert named["login"] == "rack7.node@lab"

    for path, params in (
        (f"/machine-types/{name}/credentials", {}),
        ("/credentials", {"machine_type": name}),
    ):
        response = api.get(path, params=params)
        assert response.status_code == 200, response.text
        listed = response.json()
        assert [c["login"] for c in listed] == sorted([issued["login"], "rack7.node@lab"])
        for secret in (issued["password"], named["password"], "argon2"):
            assert secret not in response.text
    everything = api.get("/credentials")
    assert {issued["id"], named["id"]} <= {c["id"] for c in everything.json()}
    assert issued["password"] not in everything.text and "argon2" not in everything.text

    got = api.get(f"/credentials/{issued['id']}")
    assert got.status_code == 200, got.text
    body = got.json()
    assert set(body) == {
        "id",
        "machine_type",
        "login",
        "config_managed",
        "created",
        "expires",
        "revoked",
        "active",
    }
    assert body["id"] == issued["id"] and body["login"] == issued["login"]
    assert body["machine_type"] == name
    assert body["config_managed"] is False and body["active"] is True
    assert body["expires"] is None and body["revoked"] is None
    created = datetime.fromisoformat(body["created"])
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=5)
    assert issued["password"] not in got.text and "argon2" not in got.text
    assert api.get(f"/machine-types/{name}").json()["credentials"] == 2
    assert audit_actions(api, issued["login"]) == ["credential.create"]


def test_credential_from_the_api_pulls_at_once(
    api: httpx.Client, anon: httpx.Client, entries: dict[str, str]
) -> None:
    name = new_type(api, ["cpu:skylake"])
    issued = new_credential(api, name)
    assert chosen(pull(anon, issued["login"], issued["password"])) == [
        entries["cpu:skylake"],
        entries["arm64"],
    ]
    direct = get_manifest(anon, basic(issued["login"], issued["password"]))
    assert chosen(direct) == [entries["cpu:skylake"], entries["arm64"]]
    check_error(pull(anon, issued["login"], issued["password"] + "x"), 401, "UNAUTHORIZED")


def test_config_credential_is_listed_and_read_only(api: httpx.Client) -> None:
    listed = api.get(f"/machine-types/{CONFIG_TYPE['name']}/credentials").json()
    assert [(c["login"], c["config_managed"]) for c in listed] == [(CONFIG_TYPE["login"], True)]
    assert CONFIG_TYPE["password"] not in json.dumps(listed)
    credential_id = listed[0]["id"]
    at = {"at": datetime.now(UTC).isoformat()}
    for action, body in (("rotate", None), ("revoke", None), ("expire", at)):
        response = api.post(f"/credentials/{credential_id}/{action}", json=body)
        assert "config" in check_error(response, 409, "CONFLICT")["message"]
    assert api.get(f"/credentials/{credential_id}").json() == listed[0]


def test_duplicate_login_is_a_conflict(api: httpx.Client) -> None:
    name = new_type(api)
    login = unique("login")
    new_credential(api, name, login=login)
    other = new_type(api)
    for taken in (login, CONFIG_TYPE["login"]):
        response = api.post(f"/machine-types/{other}/credentials", json={"login": taken})
        assert taken in check_error(response, 409, "CONFLICT")["message"]
    assert api.get(f"/machine-types/{other}/credentials").json() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires": "2001-01-01T00:00:00Z"}, "expires"),
        ({"expires": "next tuesday"}, "expires"),
        ({"expires": "9999-12-31T23:00:00-05:00"}, "expires"),
        ({"login": "has:colon"}, "login"),
        ({"login": "has space"}, "login"),
        ({"login": ""}, "login"),
        ({"password": "chosen"}, "password"),
    ],
)
def test_invalid_credential_names_the_field(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    name = new_type(api)
    check_field_error(api.post(f"/machine-types/{name}/credentials", json=body), field)
    assert api.get(f"/machine-types/{name}/credentials").json() == []


def test_revoked_credential_is_refused_tokens_included(
    api: httpx.Client, anon: httpx.Client
) -> None:
    name = new_type(api)
    issued = new_credential(api, name)
    token = registry_token(anon, issued["login"], issued["password"]).json()["token"]
    assert get_manifest(anon, f"Bearer {token}").status_code == 200

    revoked = api.post(f"/credentials/{issued['id']}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["active"] is False and revoked.json()["revoked"] is not None

    check_error(registry_token(anon, issued["login"], issued["password"]), 401, "UNAUTHORIZED")
    basic_pull = get_manifest(anon, basic(issued["login"], issued["password"]))
    check_error(basic_pull, 401, "UNAUTHORIZED")
    check_error(get_manifest(anon, f"Bearer {token}"), 401, "UNAUTHORIZED")
    assert api.get(f"/credentials/{issued['id']}").json()["active"] is False
    assert api.get(f"/machine-types/{name}").json()["credentials"] == 0
    assert audit_actions(api, issued["login"]) == ["credential.create", "credential.revoke"]


def test_expired_credential_is_refused(api: httpx.Client, anon: httpx.Client) -> None:
    name = new_type(api)
    issued = new_credential(api, name)
    token = registry_token(anon, issued["login"], issued["password"]).json()["token"]

    later = datetime.now(UTC) + timedelta(days=1)
    future = api.post(f"/credentials/{issued['id']}/expire", json={"at": later.isoformat()})
    assert future.status_code == 200, future.text
    assert datetime.fromisoformat(future.json()["expires"]) == later
    assert future.json()["active"] is True
    assert pull(anon, issued["login"], issued["password"]).status_code == 200

    now = api.post(
        f"/credentials/{issued['id']}/expire", json={"at": datetime.now(UTC).isoformat()}
    )
    assert now.status_code == 200, now.text
    assert now.json()["active"] is False
    check_error(registry_token(anon, issued["login"], issued["password"]), 401, "UNAUTHORIZED")
    check_error(get_manifest(anon, f"Bearer {token}"), 401, "UNAUTHORIZED")
    assert audit_actions(api, issued["login"]) == [
        "credential.create",
        "credential.expire",
        "credential.expire",
    ]


def test_credential_created_with_an_expiry(api: httpx.Client, anon: httpx.Client) -> None:
    name = new_type(api)
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    issued = new_credential(api, name, expires=later.isoformat())
    got = api.get(f"/credentials/{issued['id']}").json()
    assert datetime.fromisoformat(got["expires"]) == later and got["active"] is True
    assert pull(anon, issued["login"], issued["password"]).status_code == 200


def test_expiry_with_an_offset_is_the_same_instant(api: httpx.Client, anon: httpx.Client) -> None:
    east = timezone(timedelta(hours=5))
    later = (datetime.now(east) + timedelta(hours=1)).replace(microsecond=0)
    issued = new_credential(api, new_type(api), expires=later.isoformat())
    got = api.get(f"/credentials/{issued['id']}").json()
    assert datetime.fromisoformat(got["expires"]) == later
    # Now, said five hours east of UTC, is past: the login stops working.
    now = api.post(
        f"/credentials/{issued['id']}/expire", json={"at": datetime.now(east).isoformat()}
    )
    assert now.json()["active"] is False, now.json()
    check_error(registry_token(anon, issued["login"], issued["password"]), 401, "UNAUTHORIZED")


def test_expire_needs_a_time(api: httpx.Client) -> None:
    issued = new_credential(api, new_type(api))
    check_field_error(api.post(f"/credentials/{issued['id']}/expire", json={}), "at")
    check_field_error(api.post(f"/credentials/{issued['id']}/expire", json={"at": "soon"}), "at")
    late = {"at": "9999-12-31T23:00:00-05:00"}
    check_field_error(api.post(f"/credentials/{issued['id']}/expire", json=late), "at")
    early = {"at": "0001-01-01T00:00:00+05:00"}
    check_field_error(api.post(f"/credentials/{issued['id']}/expire", json=early), "at")


def test_rotated_credential_takes_only_the_new_password(
    api: httpx.Client, anon: httpx.Client
) -> None:
    name = new_type(api)
    issued = new_credential(api, name)
    assert pull(anon, issued["login"], issued["password"]).status_code == 200
    token = registry_token(anon, issued["login"], issued["password"]).json()["token"]
    assert get_manifest(anon, f"Bearer {token}").status_code == 200

    rotated = api.post(f"/credentials/{issued['id']}/rotate")
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()
    assert fresh["id"] == issued["id"] and fresh["login"] == issued["login"]
    assert fresh["password"] != issued["password"]

    check_error(registry_token(anon, issued["login"], issued["password"]), 401, "UNAUTHORIZED")
    check_error(get_manifest(anon, basic(issued["login"], issued["password"])), 401, "UNAUTHORIZED")
    # A token issued for the old password ends with it.
    check_error(get_manifest(anon, f"Bearer {token}"), 401, "UNAUTHORIZED")
    assert pull(anon, fresh["login"], fresh["password"]).status_code == 200
    assert api.get(f"/credentials/{issued['id']}").json()["active"] is True
    assert audit_actions(api, issued["login"]) == ["credential.create", "credential.rotate"]


def test_revoked_credential_cannot_be_rotated(api: httpx.Client, anon: httpx.Client) -> None:
    issued = new_credential(api, new_type(api))
    assert api.post(f"/credentials/{issued['id']}/revoke").status_code == 200
    check_error(api.post(f"/credentials/{issued['id']}/rotate"), 409, "CONFLICT")
    # Revoking twice changes nothing and says so in no new audit entry.
    first = api.get(f"/credentials/{issued['id']}").json()
    assert api.post(f"/credentials/{issued['id']}/revoke").json() == first
    assert audit_actions(api, issued["login"]) == ["credential.create", "credential.revoke"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/credentials/{x}", None),
        ("POST", "/credentials/{x}/rotate", None),
        ("POST", "/credentials/{x}/revoke", None),
        ("POST", "/credentials/{x}/expire", {"at": "2030-01-01T00:00:00Z"}),
    ],
)
def test_unknown_credential_is_404(
    api: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    credential_id = uuid.uuid4().hex[:16]
    error = check_error(
        api.request(method, path.format(x=credential_id), json=body), 404, "NOT_FOUND"
    )
    assert credential_id in error["message"]


# -- admins and admin tokens ------------------------------------------------------------------


def test_admin_create_list_delete(api: httpx.Client) -> None:
    login = unique("ops")
    created = api.post("/admins", json={"login": login, "password": "a long password"})
    assert created.status_code == 201, created.text
    assert created.json() == {"login": login}
    assert "a long password" not in api.get("/admins").text
    assert login in api.get("/admins").json()
    check_error(
        api.post("/admins", json={"login": login, "password": "another password"}), 409, "CONFLICT"
    )
    assert api.delete(f"/admins/{login}").status_code == 204
    assert login not in api.get("/admins").json()
    check_error(api.delete(f"/admins/{login}"), 404, "NOT_FOUND")
    assert audit_actions(api, login) == ["admin.create", "admin.delete"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"login": "ops-short", "password": "short"}, "password"),
        ({"login": "has:colon", "password": "a long password"}, "login"),
        ({"login": "has/slash", "password": "a long password"}, "login"),
        ({"login": "", "password": "a long password"}, "login"),
        ({"password": "a long password"}, "login"),
        ({"login": "ops-extra", "password": "a long password", "role": "root"}, "role"),
    ],
)
def test_invalid_admin_names_the_field(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    check_field_error(api.post("/admins", json=body), field)


def test_admin_tokens_create_list_use_revoke(api: httpx.Client, anon: httpx.Client) -> None:
    login = unique("ops")
    assert (
        api.post("/admins", json={"login": login, "password": "a long password"}).status_code == 201
    )
    created = api.post(f"/admins/{login}/tokens", json={"name": "laptop"})
    assert created.status_code == 201, created.text
    issued = created.json()
    assert set(issued) == {"id", "login", "token"}
    assert issued["login"] == login and issued["token"].startswith("mha_")

    listed = api.get(f"/admins/{login}/tokens")
    assert listed.status_code == 200, listed.text
    (token,) = listed.json()
    assert token["id"] == issued["id"] and token["admin"] == login and token["name"] == "laptop"
    assert token["revoked"] is None and token["expires"] is None
    assert issued["token"] not in listed.text

    own = {"authorization": f"Bearer {issued['token']}"}
    assert anon.get("/api/v1/machine-types", headers=own).status_code == 200
    name = unique("by-admin")
    assert anon.post("/api/v1/machine-types", headers=own, json={"name": name}).status_code == 201
    entry = next(e for e in api.get("/audit").json() if e["target"] == name)
    assert entry["actor"] == login  # changes are audited as the token's admin

    assert api.post(f"/tokens/{issued['id']}/revoke").status_code == 204
    check_error(anon.get("/api/v1/machine-types", headers=own), 401, "UNAUTHORIZED")
    assert api.get(f"/admins/{login}/tokens").json()[0]["revoked"] is not None
    check_error(api.post(f"/tokens/{issued['id']}/revoke"), 404, "NOT_FOUND")
    assert audit_actions(api, login) == ["admin.create", "admin_token.create"]
    assert audit_actions(api, issued["id"]) == ["admin_token.revoke"]


def test_deleting_an_admin_ends_its_tokens(api: httpx.Client, anon: httpx.Client) -> None:
    login = unique("ops")
    api.post("/admins", json={"login": login, "password": "a long password"})
    issued = api.post(f"/admins/{login}/tokens", json={}).json()
    own = {"authorization": f"Bearer {issued['token']}"}
    assert anon.get("/api/v1/admins", headers=own).status_code == 200
    assert api.delete(f"/admins/{login}").status_code == 204
    check_error(anon.get("/api/v1/admins", headers=own), 401, "UNAUTHORIZED")


def test_admin_token_with_an_expiry(api: httpx.Client, anon: httpx.Client) -> None:
    login = unique("ops")
    api.post("/admins", json={"login": login, "password": "a long password"})
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    issued = api.post(f"/admins/{login}/tokens", json={"expires": later.isoformat()}).json()
    (listed,) = api.get(f"/admins/{login}/tokens").json()
    assert datetime.fromisoformat(listed["expires"]) == later
    own = {"authorization": f"Bearer {issued['token']}"}
    assert anon.get("/api/v1/admins", headers=own).status_code == 200
    past = {"expires": "2001-01-01T00:00:00Z"}
    check_field_error(api.post(f"/admins/{login}/tokens", json=past), "expires")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admins/{x}/tokens", None),
        ("POST", "/admins/{x}/tokens", {"name": "t"}),
        ("DELETE", "/admins/{x}", None),
        ("POST", "/tokens/{x}/revoke", None),
    ],
)
def test_unknown_admin_or_token_is_404(
    api: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    missing = unique("missing")
    error = check_error(api.request(method, path.format(x=missing), json=body), 404, "NOT_FOUND")
    assert missing in error["message"]


# -- audit log --------------------------------------------------------------------------------


def test_audit_log_pages_newest_first(api: httpx.Client) -> None:
    name = new_type(api)
    for description in ("one", "two", "three"):
        api.patch(f"/machine-types/{name}", json={"description": description})
    newest = api.get("/audit", params={"limit": 2})
    assert newest.status_code == 200, newest.text
    first, second = newest.json()
    assert set(first) == {"id", "at", "actor", "action", "target", "detail"}
    assert first["id"] > second["id"]
    assert first["detail"]["description"] == "three" and second["detail"]["description"] == "two"
    assert first["actor"] == "config-token" and first["action"] == "machine_type.update"
    older = api.get("/audit", params={"limit": 2, "before": second["id"]}).json()
    assert [e["id"] for e in older] == [second["id"] - 1, second["id"] - 2]
    assert older[0]["detail"]["description"] == "one"
    assert older[1]["action"] == "machine_type.create" and older[1]["target"] == name
    assert api.get("/audit", params={"before": 1}).json() == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"before": "x"}, "before"),
        ({"before": 0}, "before"),
        ({"before": 2**64}, "before"),
    ],
)
def test_audit_log_bad_query(api: httpx.Client, params: dict[str, Any], field: str) -> None:
    check_field_error(api.get("/audit", params=params), field)


# -- explain ----------------------------------------------------------------------------------


def test_explain_for_a_type_made_through_the_api(
    api: httpx.Client, entries: dict[str, str]
) -> None:
    name = new_type(api, ["cpu:skylake"])
    response = api.get("/explain", params={"image": IMAGE, "machine_type": name})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["machine_type"]["name"] == name
    picked = [e["digest"] for e in body["entries"] if e["chosen"]]
    assert picked == [entries["cpu:skylake"], entries["arm64"]]
    missing = api.get("/explain", params={"image": IMAGE, "machine_type": unique("missing")})
    check_error(missing, 404, "NOT_FOUND")


# -- who may call the API, and the registry ---------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrong-token", f"Bearer {ADMIN_TOKEN}x", f"Basic {ADMIN_TOKEN}"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/machine-types"),
        ("POST", "/api/v1/machine-types"),
        ("GET", "/api/v1/credentials"),
        ("POST", "/api/v1/admins"),
        ("GET", "/api/v1/audit"),
    ],
)
def test_api_needs_an_admin_token(
    anon: httpx.Client, method: str, path: str, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    response = anon.request(method, path, headers=headers, json={"name": unique("nope")})
    check_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_machine_type_credentials_do_not_open_the_api(
    api: httpx.Client, anon: httpx.Client
) -> None:
    issued = new_credential(api, new_type(api))
    token = registry_token(anon, issued["login"], issued["password"]).json()["token"]
    for authorization in (
        basic(issued["login"], issued["password"]),
        basic(CONFIG_TYPE["login"], CONFIG_TYPE["password"]),
        f"Bearer {token}",
        f"Bearer {issued['password']}",
    ):
        response = anon.get("/api/v1/machine-types", headers={"authorization": authorization})
        check_error(response, 401, "UNAUTHORIZED")


def test_admin_tokens_are_not_registry_credentials(api: httpx.Client, anon: httpx.Client) -> None:
    login = unique("ops")
    api.post("/admins", json={"login": login, "password": "a long password"})
    issued = api.post(f"/admins/{login}/tokens", json={}).json()
    for token in (issued["token"], ADMIN_TOKEN):
        check_error(
            anon.get("/v2/", headers={"authorization": f"Bearer {token}"}), 401, "UNAUTHORIZED"
        )
        check_error(get_manifest(anon, f"Bearer {token}"), 401, "UNAUTHORIZED")
        check_error(
            anon.get(
                "/token",
                params={"service": "metahub"},
                headers={"authorization": f"Bearer {token}"},
            ),
            401,
            "UNAUTHORIZED",
        )
    for password in ("a long password", issued["token"]):
        check_error(registry_token(anon, login, password), 401, "UNAUTHORIZED")
        check_error(get_manifest(anon, basic(login, password)), 401, "UNAUTHORIZED")
        form = {"grant_type": "password", "username": login, "password": password}
        check_error(anon.post("/token", data=form), 401, "UNAUTHORIZED")


def test_unknown_api_path_is_a_registry_shaped_404(api: httpx.Client) -> None:
    check_error(api.get("/no-such-thing"), 404, "NOT_FOUND")


def test_openapi_lists_every_route(anon: httpx.Client) -> None:
    spec = anon.get("/api/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert set(paths) == {
        "/v1/machine-types",
        "/v1/machine-types/{name}",
        "/v1/machine-types/{name}/credentials",
        "/v1/credentials",
        "/v1/credentials/{credential_id}",
        "/v1/credentials/{credential_id}/rotate",
        "/v1/credentials/{credential_id}/revoke",
        "/v1/credentials/{credential_id}/expire",
        "/v1/admins",
        "/v1/admins/{login}",
        "/v1/admins/{login}/tokens",
        "/v1/tokens/{token_id}/revoke",
        "/v1/audit",
        "/v1/explain",
        "/v1/coverage",
        "/v1/warm",
    }
    assert spec.json()["components"]["securitySchemes"]


# -- failed logins ----------------------------------------------------------------------------
# Each test speaks from its own loopback address, since failures are counted per address.


@pytest.fixture(scope="module")
def limited(workdir: Path, layout: Path) -> Iterator[InProcessHub]:
    """A hub with the default limit: 10 failed logins a minute per address."""
    with InProcessHub(workdir / "limited", admin_hub_config(layout)) as running:
        yield running


def client_from(hub: InProcessHub, address: str) -> httpx.Client:
    return hub.client(address=address)


def config_basic(password: str = CONFIG_TYPE["password"]) -> dict[str, str]:
    return {"authorization": basic(CONFIG_TYPE["login"], password)}


def token_get(client: httpx.Client, password: str) -> httpx.Response:
    params = {"service": "metahub", "scope": "repository:qnib/bench:pull"}
    return client.get("/token", params=params, headers=config_basic(password))


def token_post(client: httpx.Client, password: str) -> httpx.Response:
    form = {"grant_type": "password", "username": CONFIG_TYPE["login"], "password": password}
    return client.post("/token", data=form)


def manifest_basic(client: httpx.Client, password: str) -> httpx.Response:
    return get_manifest(client, basic(CONFIG_TYPE["login"], password))


def admin_call(client: httpx.Client, token: str) -> httpx.Response:
    return client.get("/api/v1/machine-types", headers={"authorization": f"Bearer {token}"})


def assert_limited(response: httpx.Response) -> None:
    error = check_error(response, 429, "TOOMANYREQUESTS")
    assert "too many" in error["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 61


@pytest.mark.parametrize(
    ("address", "attempt", "good"),
    [
        ("127.0.0.2", token_get, CONFIG_TYPE["password"]),
        ("127.0.0.3", token_post, CONFIG_TYPE["password"]),
        ("127.0.0.4", manifest_basic, CONFIG_TYPE["password"]),
        ("127.0.0.5", admin_call, ADMIN_TOKEN),
    ],
    ids=["token-get", "token-post", "registry-basic", "admin-api"],
)
def test_ten_failed_logins_a_minute_then_429(
    limited: InProcessHub, address: str, attempt: Any, good: str
) -> None:
    with client_from(limited, address) as client:
        for _ in range(3):  # successes are not counted
            assert attempt(client, good).status_code == 200
        for number in range(10):
            response = attempt(client, f"wrong-{number}")
            check_error(response, 401, "UNAUTHORIZED")
        assert_limited(attempt(client, "wrong-again"))
        # Now even the right secret waits, on every login path: the limit is per address.
        assert_limited(attempt(client, good))
        assert_limited(token_get(client, CONFIG_TYPE["password"]))
        assert_limited(admin_call(client, ADMIN_TOKEN))
    with client_from(limited, "127.0.0.9") as other:
        assert attempt(other, good).status_code == 200
        assert admin_call(other, ADMIN_TOKEN).status_code == 200


def test_anonymous_and_token_requests_are_not_failed_logins(limited: InProcessHub) -> None:
    with client_from(limited, "127.0.0.6") as client:
        token = token_get(client, CONFIG_TYPE["password"]).json()["token"]
        for _ in range(12):
            assert client.get("/v2/").status_code == 401  # a challenge, not a failed login
        assert get_manifest(client, f"Bearer {token}").status_code == 200
        assert token_get(client, CONFIG_TYPE["password"]).status_code == 200
