"""The web UI end to end in a real browser: Debian's chromium, headless, driven by Playwright.

An admin made with `metahub admin create` signs in, creates a machine type with the feature
picker, creates a credential, and the docker login command the page shows is run (with skopeo
standing in for docker) before pulling through the registry API with it. Then "try an image"
must agree with what the registry served, the credential is revoked and the pull is refused.
Every page is saved as a screenshot under build/ui-screenshots/, on a desktop and on a 375 px
wide phone screen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from tests.support.admin_hub import ADMIN, ADMIN_PASSWORD, IMAGE
from tests.support.demo import demo_entries
from tests.support.metahub_server import MetaHubServer

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "ui-screenshots"
INDEX_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-browser")


@pytest.fixture(scope="module")
def layout(demo_layout: Path) -> Path:
    return demo_layout


@pytest.fixture(scope="module")
def entries(layout: Path) -> dict[str, str]:
    return demo_entries(layout)


@pytest.fixture(scope="module")
def hub_kind() -> type[MetaHubServer]:
    """A browser needs a server on a real socket."""
    return MetaHubServer


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # No chromium is a failure, not a skip: this test exists to run in a real browser.
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing (apt-get install chromium)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    return SCREENSHOTS


def shoot(page: Page, directory: Path, name: str) -> None:
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("window.innerWidth")
    assert width <= viewport, f"{page.url} is {width} px wide on a {viewport} px screen"


def sign_in(page: Page, admin_hub: MetaHubServer) -> None:
    page.goto(f"{admin_hub.url}/ui/")
    expect(page).to_have_url(f"{admin_hub.url}/ui/sign-in?next=/ui/")
    page.get_by_label("Login").fill(ADMIN)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{admin_hub.url}/ui/machine-types")


def skopeo(*args: str, stdin: str | None = None, auth: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which("skopeo"), "skopeo is missing (apt-get install skopeo)"
    return subprocess.run(
        ["skopeo", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "REGISTRY_AUTH_FILE": str(auth)},
    )


def run_docker_login(command: str, auth: Path) -> subprocess.CompletedProcess[str]:
    """The page's `docker login` command, exactly as shown, with skopeo standing in for docker."""
    script = f'docker() {{ shift; skopeo login --tls-verify=false "$@"; }}\n{command}\n'
    return subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "REGISTRY_AUTH_FILE": str(auth)},
    )


def test_admin_flow_in_a_real_browser(
    browser: Browser,
    admin_hub: MetaHubServer,
    entries: dict[str, str],
    screenshots: Path,
    workdir: Path,
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    failed_requests: list[str] = []
    page.on("requestfailed", lambda request: failed_requests.append(request.url))
    # Script errors and content-security-policy violations; answers such as 401 or 404 are
    # part of the flow and not counted.
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )

    # -- sign in (a wrong password first) ---------------------------------------------------
    page.goto(f"{admin_hub.url}/ui/")
    expect(page).to_have_url(f"{admin_hub.url}/ui/sign-in?next=/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shoot(page, screenshots, "01-sign-in")
    expect(page.get_by_label("Login")).to_be_focused()
    page.keyboard.press("Tab")  # keyboard focus shows a ring
    expect(page.get_by_label("Password")).to_be_focused()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.get_by_label("Login").fill(ADMIN)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong login or password.")
    expect(page.get_by_label("Login")).to_have_value(ADMIN)
    shoot(page, screenshots, "02-sign-in-refused")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{admin_hub.url}/ui/machine-types")
    cookie = next(c for c in context.cookies() if c["name"] == "metahub_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert page.evaluate("document.cookie") == ""  # out of reach of scripts

    # -- machine types: the list ------------------------------------------------------------
    config_link = page.get_by_role("link", name="config-type", exact=True)
    row = page.get_by_role("row").filter(has=config_link)
    expect(row).to_have_count(1)
    expect(row.locator(".chip")).to_have_text(["cpu:broadwell"])
    page.keyboard.press("Tab")  # the first stop is the skip link
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    expect(page.get_by_role("link", name="Skip to content")).to_be_in_viewport()
    shoot(page, screenshots, "03-machine-types")

    # -- create a type with the feature picker; a bad feature first --------------------------
    page.get_by_role("link", name="New machine type").click()
    expect(page.get_by_role("heading", name="New machine type")).to_be_visible()
    suggestions = page.locator("#feature-suggestions option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    assert {"cpu:skylake", "cpu:zen4", "nvcap:8.6", "cpu:broadwell"} <= set(suggestions)
    assert page.get_by_label("Feature 1").get_attribute("list") == "feature-suggestions"
    shoot(page, screenshots, "04-new-machine-type")
    page.get_by_label("Name").fill("skylake-nodes")
    page.get_by_label("Feature 1").fill("cpu:skylake")
    page.get_by_role("button", name="Add a feature").click()
    expect(page.get_by_label("Feature 2")).to_be_focused()
    page.get_by_label("Feature 2").fill("nvcap 8.6")  # no colon
    page.get_by_label("Platforms").fill("linux/amd64")
    page.get_by_label("Description").fill("Skylake nodes of the lab")
    page.get_by_role("button", name="Create machine type").click()
    feature_2 = page.get_by_label("Feature 2")
    expect(feature_2).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#feature-1-error")).to_contain_text("expected key:value")
    expect(feature_2).to_have_value("nvcap 8.6")
    expect(page.get_by_label("Name")).to_have_value("skylake-nodes")
    expect(page.get_by_label("Platforms")).to_have_value("linux/amd64")
    shoot(page, screenshots, "05-new-machine-type-invalid")
    expect(page.get_by_label("Feature 3")).to_have_value("")  # a spare row
    page.get_by_role("button", name="Remove feature 2").click()
    expect(page.get_by_label("Feature 3")).to_have_count(0)
    expect(page.get_by_label("Feature 1")).to_have_value("cpu:skylake")
    expect(page.get_by_label("Feature 2")).to_have_value("")
    page.get_by_role("button", name="Create machine type").click()
    expect(page).to_have_url(f"{admin_hub.url}/ui/machine-types/skylake-nodes")
    expect(page.get_by_role("status")).to_have_text("Machine type skylake-nodes created.")
    expect(page.locator(".facts .chip")).to_have_text(["cpu:skylake"])
    shoot(page, screenshots, "06-machine-type")

    # -- create a credential: password once, and the docker login command --------------------
    page.get_by_role("button", name="Create credential").click()
    expect(page.get_by_role("heading", name="Credential created")).to_be_visible()
    login = page.locator("#credential-login").inner_text()
    password = page.locator("#credential-password").inner_text()
    command = page.locator("#docker-login").inner_text()
    assert login.startswith("skylake-nodes-") and len(password) >= 24
    assert command == (
        f"printf '%s' '{password}' | docker login -u {login} --password-stdin {admin_hub.host}"
    )
    expect(page.get_by_role("button", name="Copy the docker login command")).to_be_visible()
    shoot(page, screenshots, "07-credential-created")

    # -- pull with it through the registry API ----------------------------------------------
    auth = workdir / "auth.json"
    logged_in = run_docker_login(command, auth)
    assert logged_in.returncode == 0, logged_in.stderr
    assert "Login Succeeded" in logged_in.stdout
    inspected = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{admin_hub.host}/{IMAGE}", auth=auth
    )
    assert inspected.returncode == 0, inspected.stderr
    served = [entry["digest"] for entry in json.loads(inspected.stdout)["manifests"]]
    assert served == [entries["cpu:skylake"]]  # linux/amd64 only, the Skylake build
    direct = httpx.get(
        f"{admin_hub.url}/v2/qnib/bench/manifests/latest",
        auth=(login, password),
        headers={"accept": INDEX_TYPES},
    )
    assert direct.status_code == 200

    # -- try an image: the table agrees with the registry -------------------------------------
    page.get_by_role("link", name="Try an image", exact=True).click()
    expect(page.get_by_role("heading", name="Try an image")).to_be_visible()
    page.get_by_label("Machine type").select_option("skylake-nodes")
    page.get_by_label("Image").fill(IMAGE)
    page.get_by_role("button", name="Explain").click()
    section = page.locator('section[data-machine-type="skylake-nodes"]')
    expect(section).to_be_visible()
    rows = section.locator("tbody tr")
    expect(rows).to_have_count(5)
    chosen = section.locator('tr[data-chosen="yes"]')
    expect(chosen).to_have_count(1)
    expect(chosen.locator(".chip")).to_have_text(["cpu:skylake"])
    assert chosen.locator("code.digest").get_attribute("title") == served[0]
    expect(section.locator('tr[data-position="4"]')).to_contain_text("not among the machine")
    expect(section.locator('tr[data-position="3"]')).to_contain_text("no nvcap feature")
    shoot(page, screenshots, "08-try-an-image")
    page.get_by_label("Machine type").select_option("")
    page.get_by_role("button", name="Explain").click()
    expect(page.locator("section.explanation")).to_have_count(2)
    config_type = page.locator('section[data-machine-type="config-type"] tr[data-chosen="yes"]')
    expect(config_type.first.locator(".chip")).to_have_text(["cpu:broadwell"])
    shoot(page, screenshots, "09-try-an-image-all-types")

    # -- revoke, and the pull is refused ------------------------------------------------------
    page.get_by_role("link", name="Machine types").click()
    page.get_by_role("link", name="skylake-nodes").click()
    page.get_by_role("button", name=f"Revoke {login}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Credential {login} revoked")
    assert dialogs == [f"Revoke {login}? Machines using it can no longer pull."]
    expect(page.locator(f'tr[data-login="{login}"] .state')).to_have_text("revoked")
    shoot(page, screenshots, "10-credential-revoked")
    refused = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{admin_hub.host}/{IMAGE}", auth=auth
    )
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower(), refused.stderr
    again = httpx.get(
        f"{admin_hub.url}/v2/qnib/bench/manifests/latest",
        auth=(login, password),
        headers={"accept": INDEX_TYPES},
    )
    assert again.status_code == 401

    # -- audit log, a missing page, sign out ---------------------------------------------------
    page.get_by_role("link", name="Audit log").click()
    audit_rows = page.locator("tbody tr")
    expect(audit_rows.first).to_contain_text("credential.revoke")
    expect(audit_rows.filter(has_text="machine_type.create")).to_contain_text("skylake-nodes")
    expect(audit_rows.filter(has_text="credential.create")).to_contain_text(ADMIN)
    shoot(page, screenshots, "11-audit-log")
    response = page.goto(f"{admin_hub.url}/ui/no-such-page")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    shoot(page, screenshots, "12-not-found")
    page.goto(f"{admin_hub.url}/ui/machine-types")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{admin_hub.url}/ui/sign-in")
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    shoot(page, screenshots, "13-signed-out")
    page.goto(f"{admin_hub.url}/ui/audit")
    expect(page).to_have_url(f"{admin_hub.url}/ui/sign-in?next=/ui/audit")

    assert not failed_requests, failed_requests
    assert not problems, problems
    context.close()


def test_pages_on_a_narrow_screen(
    browser: Browser, admin_hub: MetaHubServer, screenshots: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 375, "height": 812}, device_scale_factor=2, is_mobile=True
    )
    context.set_default_timeout(20_000)
    page = context.new_page()
    sign_in(page, admin_hub)
    pages = {
        "narrow-01-machine-types": "/ui/machine-types",
        "narrow-02-new-machine-type": "/ui/machine-types/-/new",
        "narrow-03-machine-type": "/ui/machine-types/config-type",
        "narrow-04-try-an-image": f"/ui/try?machine_type=config-type&image={IMAGE}",
        "narrow-05-audit-log": "/ui/audit",
    }
    for name, path in pages.items():
        response = page.goto(admin_hub.url + path)
        assert response is not None and response.status == 200, path
        no_horizontal_scroll(page)
        shoot(page, screenshots, name)
    # Tables turn into one card per row, each cell named by its column.
    page.goto(admin_hub.url + pages["narrow-04-try-an-image"])
    header = page.locator("table.explain thead")
    assert header.bounding_box() is not None
    assert header.bounding_box()["width"] <= 1  # type: ignore[index]
    cell = page.locator('tr[data-chosen="yes"] td[data-label="Chosen"]').first
    label = cell.evaluate("c => getComputedStyle(c, '::before').content")
    assert label == '"Chosen"'
    # The create form works at this width too.
    page.goto(admin_hub.url + "/ui/machine-types/-/new")
    page.get_by_label("Name").fill("narrow-type")
    page.get_by_label("Feature 1").fill("cpu:zen2")
    page.get_by_role("button", name="Create machine type").click()
    expect(page).to_have_url(f"{admin_hub.url}/ui/machine-types/narrow-type")
    no_horizontal_scroll(page)
    shoot(page, screenshots, "narrow-06-machine-type-created")
    context.close()
