"""The web UI (`/ui/`) route by route, through an HTTP client, on the app `metahub serve` runs.

The hub is tests/support/admin_hub.py's, in this process, with its admin made by the
`metahub admin create` command, as an operator would. What the UI changed is checked through
the management API and by pulling through the registry side.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from metahub.server.ui.sessions import (
    ANONYMOUS_TTL,
    SESSION_TTL,
    Session,
    SessionCodec,
    derive_key,
)
from tests.support.admin_hub import (
    ADMIN,
    ADMIN_PASSWORD,
    ADMIN_TOKEN,
    Hub,
    admin_hub_config,
)
from tests.support.demo import demo_entries
from tests.support.inprocess import InProcessHub
from tests.support.metahub_server import MetaHubServer
from tests.support.oci import ACCEPT_ALL

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
NO_CSRF = ""


# -- an HTML reader, enough to find elements, their attributes, text and labels ---------------


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None], parents: list[Element]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parents = parents
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())

    def get(self, name: str) -> str:
        return self.attrs.get(name) or ""


class Page(HTMLParser):
    VOID = {"input", "meta", "link", "br", "img", "hr", "source", "col", "area", "wbr"}

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs), list(self._open))
        self.elements.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for position in range(len(self._open) - 1, -1, -1):
            if self._open[position].tag == tag:
                del self._open[position:]
                return

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.parts.append(data)

    def find(self, tag: str | None = None, **attrs: str) -> list[Element]:
        wanted = {key.rstrip("_").replace("_", "-"): value for key, value in attrs.items()}
        return [
            e
            for e in self.elements
            if (tag is None or e.tag == tag) and all(e.get(k) == v for k, v in wanted.items())
        ]

    def within(self, parent: Element, tag: str | None = None, **attrs: str) -> list[Element]:
        return [e for e in self.find(tag, **attrs) if any(p is parent for p in e.parents)]

    def one(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.find(tag, **attrs)
        assert len(found) == 1, (tag, attrs, [e.attrs for e in found])
        return found[0]

    def by_id(self, element_id: str) -> Element:
        return self.one(id=element_id)

    def has_id(self, element_id: str) -> bool:
        return bool(self.find(id=element_id))


def check_labels(html: str) -> None:
    """Every control a person fills in has a label (or an aria-label) naming it."""
    page = Page(html)
    labelled = {label.get("for") for label in page.find("label")}
    controls = [
        e
        for e in page.elements
        if e.tag in ("input", "select", "textarea")
        and e.get("type") not in ("hidden", "submit", "button")
    ]
    for control in controls:
        assert control.get("id") in labelled or control.get("aria-label"), control.attrs
    for label in page.find("label"):
        assert label.text, label.attrs
    assert page.find("html", lang="en")
    assert page.find("meta", name="viewport")


def no_external_assets(html: str) -> None:
    for match in re.finditer(r'(?:src|href|action)="([^"]*)"', html):
        assert not re.match(r"(?:[a-z]+:)?//", match.group(1)), match.group(0)


# -- the UI client ----------------------------------------------------------------------------


class UI:
    """A browser in miniature: a cookie jar, and the CSRF token of the last page seen."""

    def __init__(self, hub: Hub) -> None:
        self.http = hub.client(follow_redirects=False, timeout=60)
        self.csrf = ""

    def _seen(self, response: httpx.Response) -> httpx.Response:
        found = CSRF_RE.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def get(self, path: str, **params: str) -> httpx.Response:
        return self._seen(self.http.get(path, params=params or None))

    def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = None
    ) -> httpx.Response:
        form = dict(data or {})
        token = self.csrf if csrf is None else csrf
        if token:
            form["csrf"] = token
        return self._seen(self.http.post(path, data=form))

    def sign_in(self, login: str = ADMIN, password: str = ADMIN_PASSWORD) -> httpx.Response:
        self.get("/ui/sign-in")
        return self.post("/ui/sign-in", {"login": login, "password": password, "next": "/ui/"})

    def close(self) -> None:
        self.http.close()


def redirected_to(response: httpx.Response, path: str) -> bool:
    return response.status_code == 303 and response.headers["location"] == path


def errors_shown(response: httpx.Response) -> dict[str, str]:
    """{field id: message} of the messages shown next to fields."""
    page = Page(response.text)
    return {
        e.get("id").removesuffix("-error"): e.text for e in page.find("p", class_="field-error")
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="module")
def layout(demo_layout: Path) -> Path:
    return demo_layout


@pytest.fixture(scope="module")
def entries(layout: Path) -> dict[str, str]:
    return demo_entries(layout)


@pytest.fixture(scope="module")
def api(admin_hub: Hub) -> Iterator[httpx.Client]:
    with admin_hub.client(
        base_url=admin_hub.url + "/api/v1",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=60,
    ) as http:
        yield http


@pytest.fixture
def visitor(admin_hub: Hub) -> Iterator[UI]:
    ui = UI(admin_hub)
    yield ui
    ui.close()


@pytest.fixture
def ui(admin_hub: Hub) -> Iterator[UI]:
    ui = UI(admin_hub)
    assert redirected_to(ui.sign_in(), "/ui/")
    assert ui.get("/ui/machine-types").status_code == 200  # and its CSRF token
    yield ui
    ui.close()


def machine_type(api: httpx.Client, name: str) -> dict[str, Any] | None:
    response = api.get(f"/machine-types/{name}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return dict(response.json())


def new_type(api: httpx.Client, features: list[str]) -> str:
    name = unique("mt")
    response = api.post("/machine-types", json={"name": name, "features": features})
    assert response.status_code == 201, response.text
    return name


def pull(hub: Hub, login: str, password: str) -> httpx.Response:
    with hub.client() as http:
        return http.get(
            "/v2/qnib/bench/manifests/latest",
            headers={"authorization": basic(login, password), "accept": ACCEPT_ALL},
        )


def served(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [entry["digest"] for entry in json.loads(response.content)["manifests"]]


def create_credential_page(ui: UI, name: str, **data: str) -> tuple[str, str, httpx.Response]:
    ui.get(f"/ui/machine-types/{name}")
    response = ui.post(f"/ui/machine-types/{name}/credentials", {"login": "", **data})
    assert response.status_code == 201, response.text
    page = Page(response.text)
    return page.by_id("credential-login").text, page.by_id("credential-password").text, response


# -- sessions, unit by unit -------------------------------------------------------------------


def test_session_cookie_round_trip_and_refusals() -> None:
    codec = SessionCodec(derive_key(b"k" * 32))
    session = Session.signed_in("ops", "tid", int(time.time()) + 60).with_flash("hi")
    value = codec.dumps(session)
    assert codec.loads(value) == session
    # Expired, forged, damaged or signed with another key: no session.
    assert codec.loads(value, now=session.expires) is None
    version, body, signature = value.split(".")
    forged = base64.urlsafe_b64encode(
        json.dumps({"c": session.csrf, "e": session.expires, "a": "root"}).encode()
    )
    assert codec.loads(f"{version}.{forged.decode().rstrip('=')}.{signature}") is None
    assert codec.loads(f"{version}.{body}.{signature[:-2]}xx") is None
    assert codec.loads(f"v0.{body}.{signature}") is None
    assert codec.loads("garbage") is None
    assert SessionCodec(derive_key(b"j" * 32)).loads(value) is None
    # The cookie key is not the token signing key it comes from.
    assert derive_key(b"k" * 32) != b"k" * 32


def test_sessions_expire_and_csrf_tokens_are_fresh() -> None:
    now = time.time()
    anonymous = Session.anonymous(now)
    assert anonymous.admin is None and anonymous.expires == int(now) + ANONYMOUS_TTL
    signed_in = Session.signed_in("ops", "i", int(now) + SESSION_TTL)
    assert signed_in.csrf != anonymous.csrf
    assert signed_in.csrf_ok(signed_in.csrf)
    assert not signed_in.csrf_ok(anonymous.csrf)
    assert not signed_in.csrf_ok("")


# -- signing in ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/ui/",
        "/ui/machine-types",
        "/ui/machine-types/-/new",
        "/ui/machine-types/config-type",
        "/ui/machine-types/config-type/edit",
        "/ui/try?image=qnib/bench:latest",
        "/ui/audit",
    ],
)
def test_every_page_needs_sign_in(visitor: UI, path: str) -> None:
    response = visitor.get(path)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/ui/sign-in?next=")
    assert httpx.URL(location).params["next"] == path
    assert "ops" not in response.text


def test_forms_need_sign_in_even_with_a_good_csrf_token(visitor: UI, api: httpx.Client) -> None:
    visitor.get("/ui/sign-in")  # an anonymous session with a valid CSRF token
    name = unique("anon")
    response = visitor.post("/ui/machine-types/-/new", {"name": name, "feature": "cpu:zen2"})
    assert redirected_to(response, "/ui/sign-in?next=/ui/")
    assert machine_type(api, name) is None


def test_sign_in_page_and_cookie(visitor: UI) -> None:
    page = visitor.get("/ui/sign-in")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    check_labels(page.text)
    no_external_assets(page.text)
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    anonymous = page.headers["set-cookie"]
    response = visitor.post("/ui/sign-in", {"login": ADMIN, "password": ADMIN_PASSWORD})
    assert redirected_to(response, "/ui/")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("metahub_ui=v2.") and cookie != anonymous
    attributes = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert "httponly" in attributes
    assert attributes["samesite"].strip().lower() == "samesite=strict"
    assert attributes["path"].strip() == "Path=/ui"
    assert abs(int(attributes["max-age"].split("=")[1]) - SESSION_TTL) < 60
    assert "secure" not in attributes  # plain HTTP on loopback
    types = visitor.get("/ui/machine-types")
    assert types.status_code == 200
    assert Page(types.text).one("span", class_="who").text == ADMIN


@pytest.mark.parametrize("login", [ADMIN, "nobody"])
def test_wrong_password_is_refused(visitor: UI, login: str) -> None:
    visitor.get("/ui/sign-in")
    response = visitor.post("/ui/sign-in", {"login": login, "password": "not the password"})
    assert response.status_code == 401
    page = Page(response.text)
    assert page.one("p", role="alert").text == "Wrong login or password."
    assert page.by_id("login").get("value") == login  # kept
    assert "not the password" not in response.text  # never echoed
    assert visitor.get("/ui/machine-types").status_code == 303


def test_sign_in_without_csrf_token_is_refused(visitor: UI, admin_hub: Hub) -> None:
    visitor.get("/ui/sign-in")
    good = {"login": ADMIN, "password": ADMIN_PASSWORD}
    assert visitor.post("/ui/sign-in", good, csrf=NO_CSRF).status_code == 403
    assert visitor.post("/ui/sign-in", good, csrf="forged-token").status_code == 403
    # A token from another visitor's page does not go with this visitor's cookie.
    other = UI(admin_hub)
    other.get("/ui/sign-in")
    refused = visitor.post("/ui/sign-in", good, csrf=other.csrf)
    other.close()
    assert refused.status_code == 403
    assert "did not come from this site" in Page(refused.text).one("p", role="alert").text
    # Without any cookie, a token alone is worth nothing either.
    with admin_hub.client() as cookieless:
        fresh = cookieless.post("/ui/sign-in", data={**good, "csrf": visitor.csrf})
    assert fresh.status_code == 403
    assert visitor.get("/ui/machine-types").status_code == 303


@pytest.mark.parametrize(
    ("target", "landing"),
    [
        ("/ui/audit", "/ui/audit"),
        ("https://elsewhere.example/ui/", "/ui/"),
        ("//elsewhere.example/ui/", "/ui/"),
        ("/api/v1/admins", "/ui/"),
        ("/ui/\\elsewhere", "/ui/"),
    ],
)
def test_sign_in_returns_to_the_ui_only(visitor: UI, target: str, landing: str) -> None:
    visitor.get("/ui/sign-in", next=target)
    response = visitor.post(
        "/ui/sign-in", {"login": ADMIN, "password": ADMIN_PASSWORD, "next": target}
    )
    assert redirected_to(response, landing)


def test_a_forged_cookie_is_not_a_session(visitor: UI, ui: UI) -> None:
    value = ui.http.cookies["metahub_ui"]
    version, body, signature = value.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["a"] = "root"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    visitor.http.cookies.set("metahub_ui", f"{version}.{forged}.{signature}", path="/ui")
    assert visitor.get("/ui/machine-types").status_code == 303


def test_sign_out_ends_the_session_everywhere(admin_hub: Hub, ui: UI) -> None:
    stolen = ui.http.cookies["metahub_ui"]
    response = ui.post("/ui/sign-out")
    assert redirected_to(response, "/ui/sign-in")
    assert "You are signed out." in ui.get("/ui/sign-in").text
    assert ui.get("/ui/machine-types").status_code == 303
    # The old cookie, replayed, is refused: its admin token was revoked.
    replay = UI(admin_hub)
    replay.http.cookies.set("metahub_ui", stolen, path="/ui")
    assert replay.get("/ui/machine-types").status_code == 303
    replay.close()


def test_a_session_is_an_audited_admin_token(ui: UI, api: httpx.Client) -> None:
    tokens = api.get(f"/admins/{ADMIN}/tokens").json()
    live = [t for t in tokens if t["name"] == "web UI session" and t["revoked"] is None]
    assert live and all(t["expires"] for t in live)
    # Revoking it through the API signs the browser out.
    for token in live:
        assert api.post(f"/tokens/{token['id']}/revoke").status_code == 204
    ended = ui.get("/ui/machine-types")
    assert redirected_to(ended, "/ui/sign-in?next=/ui/machine-types")
    flash = Page(ui.get("/ui/sign-in", next="/ui/machine-types").text).one("p", class_="flash")
    assert flash.text == "Your session has ended; sign in again."
    audit = api.get("/audit", params={"limit": 1000}).json()
    assert any(e["action"] == "admin_token.create" and e["actor"] == ADMIN for e in audit)


def test_a_session_cookie_is_no_api_credential(ui: UI, admin_hub: Hub) -> None:
    cookie = ui.http.cookies["metahub_ui"]
    body = cookie.split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert not any(str(value).startswith("mha_") for value in payload.values())
    for offered in (cookie, *map(str, payload.values())):
        with admin_hub.client() as http:
            refused = http.get(
                "/api/v1/machine-types", headers={"authorization": f"Bearer {offered}"}
            )
        assert refused.status_code == 401


# -- machine types ------------------------------------------------------------------------------


def test_machine_type_list(ui: UI, api: httpx.Client) -> None:
    name = new_type(api, ["cpu:zen3", "nvcap:8.0"])
    assert api.post(f"/machine-types/{name}/credentials", json={}).status_code == 201
    response = ui.get("/ui/machine-types")
    assert response.status_code == 200
    page = Page(response.text)
    link = page.one("a", href=f"/ui/machine-types/{name}")
    assert link.text == name
    rows = [r for r in page.find("tr") if name in r.text]
    assert len(rows) == 1
    assert "cpu:zen3" in rows[0].text and "nvcap:8.0" in rows[0].text
    chips = [c.text for c in page.find("li", class_="chip")]
    assert {"cpu:zen3", "nvcap:8.0", "cpu:broadwell"} <= set(chips)
    counts = [c.text for c in page.find("td", class_="count")]
    assert "1" in counts
    check_labels(response.text)
    no_external_assets(response.text)


def test_feature_picker_suggests_archspec_cuda_and_features_in_use(
    ui: UI, api: httpx.Client
) -> None:
    new_type(api, ["instType:c5"])
    response = ui.get("/ui/machine-types/-/new")
    assert response.status_code == 200
    page = Page(response.text)
    datalist = page.by_id("feature-suggestions")
    assert datalist.tag == "datalist"
    values = [o.get("value") for o in page.find("option") if o.get("value")]
    assert {"cpu:skylake", "cpu:zen4", "cpu:x86_64_v3", "cpu:neoverse_v2"} <= set(values)
    assert {"cpu:coffeelake", "nvcap:8.6", "nvcap:9.0a", "nvptx:8.0"} <= set(values)
    assert "instType:c5" in values
    in_use = {o.get("value") for o in page.find("option") if "in use" in o.get("label")}
    assert {"instType:c5", "cpu:broadwell"} <= in_use
    assert page.by_id("feature-0").get("list") == "feature-suggestions"
    check_labels(response.text)


def test_create_a_machine_type(ui: UI, api: httpx.Client) -> None:
    name = unique("new")
    ui.get("/ui/machine-types/-/new")
    response = ui.post(
        "/ui/machine-types/-/new",
        {
            "name": name,
            "feature": ["cpu:skylake", "", "ht:on"],
            "mode": "best",
            "platforms": "linux/amd64, linux/arm64",
            "repositories": "docker.io/library/*,\nghcr.io/acme/**",
            "description": "lab nodes",
        },
    )
    assert redirected_to(response, f"/ui/machine-types/{name}")
    created = machine_type(api, name)
    assert created is not None
    assert created["features"] == ["cpu:skylake", "ht:on"]
    assert created["platforms"] == ["linux/amd64", "linux/arm64"]
    assert created["repositories"] == ["docker.io/library/*", "ghcr.io/acme/**"]
    assert created["description"] == "lab nodes"
    shown = ui.get(f"/ui/machine-types/{name}")
    assert shown.status_code == 200
    assert f"Machine type {name} created." in Page(shown.text).one("p", class_="flash").text
    assert [c.text for c in Page(shown.text).find("li", class_="chip")] == ["cpu:skylake", "ht:on"]
    assert "docker.io/library/*, ghcr.io/acme/**" in shown.text
    edit_form = Page(ui.get(f"/ui/machine-types/{name}/edit").text)
    assert edit_form.by_id("repositories").get("value") == "docker.io/library/*, ghcr.io/acme/**"
    # The flash message is shown once.
    assert not Page(ui.get(f"/ui/machine-types/{name}").text).find("p", class_="flash")


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"feature": ["cpu:skylake", "cpu"]}, "feature-1", "expected key:value"),
        ({"feature": ["nvcap 8.0"]}, "feature-0", "expected key:value"),
        ({"name": "no spaces"}, "name", "use letters, digits"),
        ({"name": ""}, "name", "use letters, digits"),
        ({"platforms": "linux/amd64, amd64"}, "platforms", "expected os/architecture"),
        ({"repositories": "docker.io/*, ghcr.io"}, "repositories", "'ghcr.io' names no"),
        ({"mode": "loose"}, "mode", "must be one of best, exact"),
        ({"name": "config-type"}, "name", "already exists"),
    ],
)
def test_machine_type_validation_messages_next_to_the_field(
    ui: UI, api: httpx.Client, form: dict[str, Any], field: str, message: str
) -> None:
    ui.get("/ui/machine-types/-/new")
    name = unique("bad")
    sent = {
        "name": name,
        "feature": ["cpu:broadwell"],
        "platforms": "linux/amd64",
        "repositories": "docker.io/**",
        "description": "kept",
        **form,
    }
    response = ui.post("/ui/machine-types/-/new", sent)
    assert response.status_code in (409, 422)
    shown = errors_shown(response)
    assert list(shown) == [field], shown
    assert message in shown[field]
    page = Page(response.text)
    control = page.by_id(field if field != "mode" else "mode-best")
    if field != "mode":
        assert control.get("aria-invalid") == "true"
        assert f"{field}-error" in control.get("aria-describedby")
    # What was typed is kept.
    assert page.by_id("description").get("value") == "kept"
    assert page.by_id("name").get("value") == sent["name"]
    assert page.by_id("platforms").get("value") == sent["platforms"]
    assert page.by_id("repositories").get("value") == sent["repositories"]
    features = [e.get("value") for e in page.find("input", name="feature")]
    assert features[: len(sent["feature"])] == sent["feature"]
    assert page.one("div", role="alert")  # a summary of what to correct
    check_labels(response.text)
    assert machine_type(api, name) is None


def test_edit_a_machine_type_changes_what_the_registry_serves(
    ui: UI, api: httpx.Client, admin_hub: Hub, entries: dict[str, str]
) -> None:
    name = new_type(api, ["cpu:skylake"])
    issued = api.post(f"/machine-types/{name}/credentials", json={}).json()
    assert served(pull(admin_hub, issued["login"], issued["password"])) == [
        entries["cpu:skylake"],
        entries["arm64"],
    ]
    form = ui.get(f"/ui/machine-types/{name}/edit")
    assert form.status_code == 200
    page = Page(form.text)
    assert page.by_id("feature-0").get("value") == "cpu:skylake"
    assert page.by_id("name").get("readonly") is not None or "readonly" in page.by_id("name").attrs
    check_labels(form.text)
    bad = ui.post(f"/ui/machine-types/{name}/edit", {"feature": ["cpu:broadwell", "x"]})
    assert bad.status_code == 422
    assert "expected key:value" in errors_shown(bad)["feature-1"]
    response = ui.post(
        f"/ui/machine-types/{name}/edit",
        {"feature": ["cpu:broadwell"], "mode": "best", "platforms": "linux/amd64"},
    )
    assert redirected_to(response, f"/ui/machine-types/{name}")
    assert served(pull(admin_hub, issued["login"], issued["password"])) == [
        entries["cpu:broadwell"]
    ]


def test_config_types_are_read_only(ui: UI, api: httpx.Client) -> None:
    shown = ui.get("/ui/machine-types/config-type")
    assert shown.status_code == 200
    page = Page(shown.text)
    assert not page.find("a", href="/ui/machine-types/config-type/edit")
    assert not page.find("form", action="/ui/machine-types/config-type/delete")
    ui.get("/ui/machine-types/config-type/edit")
    refused = ui.post("/ui/machine-types/config-type/edit", {"feature": ["cpu:zen2"]})
    assert refused.status_code == 409
    assert "comes from the config file" in refused.text
    assert machine_type(api, "config-type")["features"] == ["cpu:broadwell"]  # type: ignore[index]
    deleted = ui.post("/ui/machine-types/config-type/delete")
    assert deleted.status_code == 409
    assert machine_type(api, "config-type") is not None


def test_delete_a_machine_type(ui: UI, api: httpx.Client, admin_hub: Hub) -> None:
    name = new_type(api, ["cpu:zen2"])
    issued = api.post(f"/machine-types/{name}/credentials", json={}).json()
    ui.get(f"/ui/machine-types/{name}")
    response = ui.post(f"/ui/machine-types/{name}/delete")
    assert redirected_to(response, "/ui/machine-types")
    assert machine_type(api, name) is None
    assert pull(admin_hub, issued["login"], issued["password"]).status_code == 401
    assert ui.get(f"/ui/machine-types/{name}").status_code == 404


# -- credentials ------------------------------------------------------------------------------


def test_create_a_credential_pull_with_it_and_revoke_it(
    ui: UI, api: httpx.Client, admin_hub: Hub, entries: dict[str, str]
) -> None:
    name = new_type(api, ["cpu:skylake"])
    assert api.patch(f"/machine-types/{name}", json={"platforms": ["linux/amd64"]}).is_success
    login, password, response = create_credential_page(ui, name)
    assert response.headers["cache-control"] == "no-store"
    assert login.startswith(f"{name}-") and len(password) >= 24
    command = Page(response.text).by_id("docker-login").text
    assert command == (
        f"printf '%s' '{password}' | docker login -u {login} --password-stdin {admin_hub.host}"
    )
    check_labels(response.text)
    # The registry knows the new login at once.
    assert served(pull(admin_hub, login, password)) == [entries["cpu:skylake"]]
    # Shown once: the type's page lists the login, never the password.
    shown = ui.get(f"/ui/machine-types/{name}")
    assert login in shown.text and password not in shown.text
    (credential,) = api.get(f"/machine-types/{name}/credentials").json()
    assert "1" in [c.text for c in Page(ui.get("/ui/machine-types").text).find("td")]
    revoked = ui.post(f"/ui/credentials/{credential['id']}/revoke")
    assert redirected_to(revoked, f"/ui/machine-types/{name}")
    assert pull(admin_hub, login, password).status_code == 401
    page = Page(ui.get(f"/ui/machine-types/{name}").text)
    assert f"Credential {login} revoked" in page.one("p", class_="flash").text
    row = page.one("tr", data_login=login)
    assert "revoked" in row.text
    assert not page.find("form", action=f"/ui/credentials/{credential['id']}/revoke")


def test_credential_with_a_chosen_login_and_expiry(ui: UI, api: httpx.Client) -> None:
    name = new_type(api, ["cpu:zen2"])
    login = unique("node")
    chosen, _, _ = create_credential_page(ui, name, login=login, expires="2099-01-31T12:00")
    assert chosen == login
    (credential,) = api.get(f"/machine-types/{name}/credentials").json()
    assert credential["login"] == login
    assert credential["expires"].startswith("2099-01-31T12:00:00")


@pytest.mark.parametrize(
    ("data", "field", "message", "status"),
    [
        ({"login": "has:colon"}, "login", "no ':'", 422),
        ({"login": "config-login"}, "login", "is taken", 409),
        ({"expires": "next tuesday"}, "expires", "use a date and time", 422),
        ({"expires": "2001-01-01T00:00"}, "expires", "must be in the future", 422),
    ],
)
def test_credential_form_errors(
    ui: UI, api: httpx.Client, data: dict[str, str], field: str, message: str, status: int
) -> None:
    name = new_type(api, ["cpu:zen2"])
    ui.get(f"/ui/machine-types/{name}")
    response = ui.post(f"/ui/machine-types/{name}/credentials", {"login": "", **data})
    assert response.status_code == status
    shown = errors_shown(response)
    assert list(shown) == [field] and message in shown[field], shown
    assert Page(response.text).by_id(field).get("value") == data[field]
    assert api.get(f"/machine-types/{name}/credentials").json() == []


def test_config_credentials_cannot_be_revoked_here(ui: UI, api: httpx.Client) -> None:
    credentials = api.get("/machine-types/config-type/credentials").json()
    (config_credential,) = [c for c in credentials if c["config_managed"]]
    page = Page(ui.get("/ui/machine-types/config-type").text)
    assert "from the config file" in page.one("tr", data_login="config-login").text
    refused = ui.post(f"/ui/credentials/{config_credential['id']}/revoke")
    assert refused.status_code == 409
    assert ui.post("/ui/credentials/no-such-id/revoke").status_code == 404


# -- CSRF on every form -------------------------------------------------------------------------


def test_every_form_refuses_a_missing_or_wrong_csrf_token(
    ui: UI, api: httpx.Client, admin_hub: Hub
) -> None:
    name = new_type(api, ["cpu:zen2"])
    issued = api.post(f"/machine-types/{name}/credentials", json={}).json()
    forms = {
        "/ui/sign-out": {},
        "/ui/machine-types/-/new": {"name": unique("csrf"), "feature": "cpu:zen2"},
        f"/ui/machine-types/{name}/edit": {"feature": "cpu:zen3"},
        f"/ui/machine-types/{name}/delete": {},
        f"/ui/machine-types/{name}/credentials": {"login": unique("csrf")},
        f"/ui/credentials/{issued['id']}/revoke": {},
    }
    ui.get("/ui/machine-types")
    for path, data in forms.items():
        for token in (NO_CSRF, "wrong-" + ui.csrf):
            response = ui.http.post(path, data={**data, **({"csrf": token} if token else {})})
            assert response.status_code == 403, (path, response.text)
            assert "Form refused" in response.text
    assert machine_type(api, name)["features"] == ["cpu:zen2"]  # type: ignore[index]
    assert [c["login"] for c in api.get(f"/machine-types/{name}/credentials").json()] == [
        issued["login"]
    ]
    assert pull(admin_hub, issued["login"], issued["password"]).status_code == 200
    assert ui.get("/ui/machine-types").status_code == 200  # still signed in


# -- try an image -------------------------------------------------------------------------------


def test_try_an_image_for_one_machine_type(
    ui: UI, api: httpx.Client, admin_hub: Hub, entries: dict[str, str]
) -> None:
    response = ui.get("/ui/try", machine_type="config-type", image="qnib/bench:latest")
    assert response.status_code == 200
    page = Page(response.text)
    (section,) = page.find("section", class_="explanation")
    assert section.get("data-machine-type") == "config-type"
    rows = [r for r in page.find("tr") if r.get("data-position")]
    assert [r.get("data-position") for r in rows] == ["0", "1", "2", "3", "4"]
    # What the table says is chosen is what the registry serves config-login.
    pulled = served(pull(admin_hub, "config-login", "config-password"))
    assert pulled == [entries["cpu:broadwell"], entries["arm64"]]
    chosen = [r for r in rows if r.get("data-chosen") == "yes"]
    digests = [page.within(r, "code", class_="digest")[0].get("title") for r in chosen]
    assert digests == pulled
    for row in chosen:
        assert "chosen" in row.text
    skylake_row = rows[1]
    assert "cpu:skylake" in skylake_row.text and "no" in skylake_row.text
    assert "not an ancestor" in skylake_row.text  # why not
    assert "served filtered" in response.text
    check_labels(response.text)
    select = page.by_id("machine_type")
    assert select.tag == "select"
    assert page.one("option", value="config-type").get("selected") is not None or (
        "selected" in page.one("option", value="config-type").attrs
    )


def test_try_an_image_for_all_machine_types(ui: UI, api: httpx.Client) -> None:
    name = new_type(api, ["cpu:skylake", "nvcap:5.2"])
    response = ui.get("/ui/try", machine_type="", image="qnib/bench:latest")
    assert response.status_code == 200
    page = Page(response.text)
    shown = [s.get("data-machine-type") for s in page.find("section", class_="explanation")]
    everything = [t["name"] for t in api.get("/machine-types").json()]
    assert shown == sorted(everything)
    assert name in shown


@pytest.mark.parametrize(
    ("params", "status", "field", "message"),
    [
        ({"image": "qnib/bench:latest", "machine_type": "nope"}, 404, "machine_type", "nope"),
        ({"image": "Not A Name:x"}, 400, "image", "invalid repository name"),
        ({"image": "qnib/bench:bad tag!"}, 400, "image", "tag"),
        ({"image": ""}, 400, "image", "enter an image"),
    ],
)
def test_try_an_image_with_bad_input(
    ui: UI, params: dict[str, str], status: int, field: str, message: str
) -> None:
    response = ui.get("/ui/try", **params)
    assert response.status_code == status
    shown = errors_shown(response)
    assert field in shown and message in shown[field], shown
    assert Page(response.text).by_id("image").get("value") == params["image"]
    assert "Traceback" not in response.text


def test_try_an_image_that_is_not_an_index(ui: UI) -> None:
    response = ui.get("/ui/try", machine_type="config-type", image="qnib/bench:cpu-skylake")
    assert response.status_code == 200
    outcome = Page(response.text).one("p", class_="outcome").text
    assert outcome.startswith("Upstream image manifest sha256:")
    assert "a single image, the same for every machine type" in outcome
    assert not Page(response.text).find("table")


def test_try_an_image_the_upstream_does_not_have(ui: UI) -> None:
    response = ui.get("/ui/try", image="qnib/missing:latest")
    assert response.status_code == 404
    assert "qnib/missing" in Page(response.text).one("p", role="alert").text


def test_try_an_image_from_a_machine_type_page(ui: UI) -> None:
    page = Page(ui.get("/ui/machine-types/config-type").text)
    (link,) = [a for a in page.find("a") if a.text == "Try an image as config-type"]
    response = ui.get(link.get("href"))
    assert response.status_code == 200
    form = Page(response.text)
    assert "selected" in form.one("option", value="config-type").attrs
    assert not form.find("p", class_="field-error")


def test_try_page_without_a_query_is_just_the_form(ui: UI) -> None:
    response = ui.get("/ui/try")
    assert response.status_code == 200
    page = Page(response.text)
    assert not page.find("section", class_="explanation")
    assert not page.find("p", class_="field-error")
    check_labels(response.text)


# -- audit log ----------------------------------------------------------------------------------


def test_audit_log_page(ui: UI, api: httpx.Client) -> None:
    name = unique("audited")
    ui.get("/ui/machine-types/-/new")
    ui.post("/ui/machine-types/-/new", {"name": name, "feature": ["cpu:zen2"]})
    response = ui.get("/ui/audit")
    assert response.status_code == 200
    page = Page(response.text)
    rows = [r for r in page.find("tr") if name in r.text]
    assert len(rows) == 1
    assert ADMIN in rows[0].text and "machine_type.create" in rows[0].text
    assert "cpu:zen2" in rows[0].text
    newest = api.get("/audit", params={"limit": 1}).json()[0]
    assert page.find("th", scope="row")[0].text == str(newest["id"])
    assert ui.get("/ui/audit", before="x").status_code == 400


def test_audit_log_pages_back(ui: UI, api: httpx.Client) -> None:
    for _ in range(51):
        new_type(api, ["cpu:zen2"])
    first = Page(ui.get("/ui/audit").text)
    ids = [int(th.text) for th in first.find("th", scope="row")]
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    older = first.one("a", href=f"/ui/audit?before={ids[-1]}")
    assert older.text == "Older entries"
    second = Page(ui.get("/ui/audit", before=str(ids[-1])).text)
    assert int(second.find("th", scope="row")[0].text) == ids[-1] - 1


# -- errors, static files, other servers --------------------------------------------------------


def test_unknown_ui_paths_are_a_404_page(ui: UI, visitor: UI) -> None:
    for client in (ui, visitor):
        response = client.get("/ui/no/such/page")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "There is no page at /ui/no/such/page." in response.text
    missing = ui.get("/ui/machine-types/no-such-type")
    assert missing.status_code == 404
    problem = Page(missing.text).one("p", class_="problem").text
    assert problem == "machine type 'no-such-type' does not exist"
    wrong_method = ui.http.delete("/ui/machine-types")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"].startswith("text/html")


def test_a_form_with_a_file_is_refused(ui: UI, api: httpx.Client) -> None:
    name = unique("upload")
    response = ui.http.post(
        "/ui/machine-types/-/new",
        data={"csrf": ui.csrf, "name": name},
        files={"feature": ("features.txt", b"cpu:zen2")},
    )
    assert response.status_code == 400
    assert "could not be read" in response.text
    assert machine_type(api, name) is None


def test_static_files_are_served_locally(visitor: UI) -> None:
    css = visitor.get("/ui/static/ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "@media (max-width" in css.text  # the narrow-screen layout
    assert ":focus-visible" in css.text
    js = visitor.get("/ui/static/ui.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert not re.search(r"https?://", css.text + js.text)
    assert visitor.get("/ui/static/nope.css").status_code == 404


def test_a_session_works_on_another_replica(
    tmp_path: Path, layout: Path, admin_hub: Hub, ui: UI
) -> None:
    # A second server on the same database: the session key comes from the shared signing key.
    config = admin_hub_config(layout, data_dir=str(admin_hub.tmp / "data"))
    session = {"cookie": f"metahub_ui={ui.http.cookies['metahub_ui']}"}
    with MetaHubServer(tmp_path, config) as replica, replica.client(headers=session) as http:
        response = http.get("/ui/machine-types")
        assert response.status_code == 200, response.text
        assert Page(response.text).one("span", class_="who").text == ADMIN
        # Signing out there ends the session here too.
        out = http.post("/ui/sign-out", data={"csrf": ui.csrf})
        assert out.status_code == 303
    assert ui.get("/ui/machine-types").status_code == 303


@pytest.fixture(scope="module")
def limited(workdir: Path, layout: Path) -> Iterator[InProcessHub]:
    settings = admin_hub_config(layout, login_limit={"failures": 3, "window": 600})
    with InProcessHub(workdir / "limited", settings) as hub:
        hub.create_admin(ADMIN, ADMIN_PASSWORD)
        yield hub


def test_failed_sign_ins_are_limited_per_address(limited: InProcessHub) -> None:
    ui = UI(limited)
    for _ in range(3):
        ui.get("/ui/sign-in")
        wrong = ui.post("/ui/sign-in", {"login": ADMIN, "password": "wrong password"})
        assert wrong.status_code == 401
    # Now even the right password is refused for a while, with the time to wait.
    ui.get("/ui/sign-in")
    refused = ui.post("/ui/sign-in", {"login": ADMIN, "password": ADMIN_PASSWORD})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert "too many failed logins" in Page(refused.text).one("p", role="alert").text
    assert ui.get("/ui/machine-types").status_code == 303
    # The same limiter guards the management API.
    with limited.client() as http:
        api = http.get("/api/v1/machine-types", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert api.status_code == 429
    ui.close()


def test_a_session_from_another_database_is_not_valid(
    limited: InProcessHub, admin_hub: Hub, ui: UI
) -> None:
    session = {"cookie": f"metahub_ui={ui.http.cookies['metahub_ui']}"}
    with admin_hub.client(headers=session) as same, limited.client(headers=session) as other:
        assert same.get("/ui/machine-types").status_code == 200  # the cookie is a session here
        assert other.get("/ui/machine-types").status_code == 303


# -- x86-64 levels on the try page ----------------------------------------------------------------


@pytest.fixture(scope="module")
def levels_hub(workdir: Path) -> Iterator[InProcessHub]:
    from metahub.demo.images import FeatureImage, build_feature_images

    layout = workdir / "levels-layout"
    builds = [
        FeatureImage("v2", "x86-64-v2", (), "v2", "v2"),
        FeatureImage("v3", "x86-64-v3", (), "v3", "v3"),
        FeatureImage("base", "x86-64", (), "base"),
    ]
    build_feature_images(layout, "hpc/levels", builds)
    zen3 = {"name": "zen3", "login": "zen3", "password": "zen3", "features": ["cpu:zen3"]}
    settings = {**admin_hub_config(layout), "machine_types": [zen3]}
    with InProcessHub(workdir / "levels", settings) as hub:
        hub.create_admin(ADMIN, ADMIN_PASSWORD)
        yield hub


def test_try_page_shows_the_level_rule_and_the_served_platform(levels_hub: InProcessHub) -> None:
    ui = UI(levels_hub)
    assert redirected_to(ui.sign_in(), "/ui/")
    response = ui.get("/ui/try", machine_type="zen3", image="hpc/levels:latest")
    assert response.status_code == 200, response.text
    page = Page(response.text)
    rows = [r for r in page.find("tr") if r.get("data-position")]
    assert [r.get("data-chosen") for r in rows] == ["no", "yes", "no"]
    chosen = rows[1]
    assert "linux/amd64/v3" in chosen.text
    assert "served as linux/amd64" in page.within(chosen, "div", class_="muted served-as")[0].text
    (rules,) = page.within(chosen, "ul", class_="rules")
    assert "amd64 variant v3 read as cpu:x86_64_v3, which cpu:zen3 runs" in rules.text
    assert not page.within(rows[0], "div", class_="muted served-as")
    check_labels(response.text)
    ui.close()
