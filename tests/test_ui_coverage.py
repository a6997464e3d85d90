"""The web UI's Coverage page: a matrix of machine types by images, coloured by outcome, each
cell linking to its explanation, and the builds that would help; through an HTTP client (in
process) and in a real browser (chromium, driven by Playwright), screenshotted.

The upstream is a real docker-registry with test_fleet_coverage.py's images and machine types.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.support.admin_hub import ADMIN, ADMIN_PASSWORD
from tests.support.inprocess import InProcessHub
from tests.support.metahub_server import MetaHubServer
from tests.support.servers import RegistryServer
from tests.test_fleet_coverage import (
    APP,
    NAMES,
    PLAIN,
    SKYLAKE_ONLY,
    fleet_images_built,
    hub_config,
    push_all,
)
from tests.test_ui import UI, Page, check_labels, errors_shown
from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, no_horizontal_scroll

IMAGES_TEXT = f"{APP}\n{SKYLAKE_ONLY}\n{PLAIN}\n"
# The seed of test_fleet_coverage.py: what each machine type gets of each image.
EXPECTED = {
    APP: {n: "matched" if n in ("bw", "sk") else "generic" for n in NAMES},
    SKYLAKE_ONLY: {n: "matched" if n == "sk" else "none" for n in NAMES},
    PLAIN: dict.fromkeys(NAMES, "generic"),
}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("ui-coverage-registry")) as registry:
        push_all(registry, fleet_images_built())
        yield registry


def hub_with_admin(kind: Any, workdir: Path, upstream: RegistryServer) -> Any:
    hub = kind(workdir, hub_config(upstream.url))
    hub.start()
    hub.create_admin(ADMIN, ADMIN_PASSWORD)
    return hub


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, upstream: RegistryServer) -> Iterator[UI]:
    hub = hub_with_admin(InProcessHub, tmp_path_factory.mktemp("ui-coverage"), upstream)
    client = UI(hub)
    client.sign_in()
    yield client
    client.close()
    hub.stop()


def matrix(page: Page) -> dict[str, dict[str, str]]:
    """{image: {machine type: outcome}} as the cells of the page say."""
    found: dict[str, dict[str, str]] = {}
    for cell in page.find("td"):
        if cell.get("data-outcome"):
            row = next(p for p in reversed(cell.parents) if p.tag == "tr")
            found.setdefault(cell.get("data-image"), {})[row.get("data-machine-type")] = cell.get(
                "data-outcome"
            )
    return found


def test_coverage_page_shows_the_matrix_with_links_to_explanations(ui: UI) -> None:
    form = ui.get("/ui/coverage")
    assert form.status_code == 200
    check_labels(form.text)
    response = ui.get("/ui/coverage", images=IMAGES_TEXT)
    assert response.status_code == 200, response.text
    check_labels(response.text)
    page = Page(response.text)
    assert matrix(page) == EXPECTED
    links = [a for a in page.find("a") if "outcome" in a.get("class").split()]
    assert len(links) == len(NAMES) * 3
    for link in links:
        target = urlsplit(link.get("href"))
        assert target.path == "/ui/try"
        query = {k: v[0] for k, v in parse_qs(target.query).items()}
        cell = next(p for p in reversed(link.parents) if p.tag == "td")
        row = next(p for p in reversed(link.parents) if p.tag == "tr")
        assert query == {
            "image": cell.get("data-image"),
            "machine_type": row.get("data-machine-type"),
        }
        assert link.text == cell.get("data-outcome")
    # A cell's link leads to the explanation of that very pull.
    explained = ui.get("/ui/try", image=SKYLAKE_ONLY, machine_type="bw")
    assert "nothing fits" in explained.text
    suggestions = {li.get("data-image"): li.text for li in page.find("li") if li.get("data-image")}
    assert "cpu:ivybridge for hw, iv; cpu:zen2 for zen" in suggestions[APP]
    assert "no cpu build reaches gpu" in suggestions[APP]
    assert "no machine type falls back" in suggestions[SKYLAKE_ONLY]


def test_coverage_page_for_chosen_machine_types(ui: UI) -> None:
    response = ui.http.get(
        "/ui/coverage", params=[("images", APP), ("machine_type", "zen"), ("machine_type", "bw")]
    )
    assert response.status_code == 200
    assert matrix(Page(response.text)) == {APP: {"zen": "generic", "bw": "matched"}}


@pytest.mark.parametrize(
    ("params", "status", "field", "message"),
    [
        ([("images", "  ")], 400, "images", "enter one image a line"),
        ([("images", "Not A Name")], 400, "images", "Not A Name:"),
        (
            [("images", APP), ("machine_type", "nope")],
            404,
            "machine_type",
            "no such machine type: nope",
        ),
    ],
)
def test_coverage_page_says_what_is_wrong(
    ui: UI, params: list[tuple[str, str]], status: int, field: str, message: str
) -> None:
    response = ui.http.get("/ui/coverage", params=params)
    assert response.status_code == status
    assert message in errors_shown(response)[field]


def test_coverage_page_names_an_image_the_upstream_lacks(ui: UI) -> None:
    response = ui.get("/ui/coverage", images="fleet/missing:1")
    assert response.status_code == 404
    problem = Page(response.text).one("p", class_="problem")
    assert "fleet/missing" in problem.text


@pytest.mark.e2e
def test_coverage_page_in_a_real_browser(
    tmp_path_factory: pytest.TempPathFactory, upstream: RegistryServer
) -> None:
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing (apt-get install chromium)"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    server = hub_with_admin(MetaHubServer, tmp_path_factory.mktemp("ui-coverage-server"), upstream)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                _browse(browser, server)
            finally:
                browser.close()
    finally:
        server.stop()


def _browse(browser: Browser, server: MetaHubServer) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{server.url}/ui/")
    page.get_by_label("Login").fill(ADMIN)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Coverage").click()
    expect(page.get_by_role("heading", name="Coverage", exact=True)).to_be_visible()
    page.get_by_label("Images").fill(IMAGES_TEXT)
    page.get_by_role("button", name="Show coverage").click()
    expect(page.get_by_role("heading", name="What a pull gets")).to_be_visible()

    colours = {}
    for image, outcomes in EXPECTED.items():
        for name, outcome in outcomes.items():
            cell = page.locator(f'tr[data-machine-type="{name}"] td[data-image="{image}"]')
            expect(cell).to_have_attribute("data-outcome", outcome)
            link = cell.get_by_role("link", name=outcome)
            colours.setdefault(outcome, link.evaluate("e => getComputedStyle(e).backgroundColor"))
    assert len(set(colours.values())) == 3, colours  # each outcome has its own colour
    page.screenshot(path=str(SCREENSHOTS / "coverage-01-matrix.png"), full_page=True)

    # A cell leads to its explanation.
    page.locator(f'tr[data-machine-type="zen"] td[data-image="{APP}"]').get_by_role(
        "link", name="generic"
    ).click()
    expect(page.get_by_role("heading", name="Try an image")).to_be_visible()
    expect(page.locator('section[data-machine-type="zen"]')).to_be_visible()
    expect(page.locator('tr[data-chosen="yes"]').first).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "coverage-02-explanation.png"), full_page=True)
    context.close()

    narrow = browser.new_context(
        viewport={"width": 375, "height": 812}, device_scale_factor=2, is_mobile=True
    )
    phone = narrow.new_page()
    phone.goto(f"{server.url}/ui/sign-in")
    phone.get_by_label("Login").fill(ADMIN)
    phone.get_by_label("Password").fill(ADMIN_PASSWORD)
    phone.get_by_role("button", name="Sign in").click()
    expect(phone).to_have_url(f"{server.url}/ui/machine-types")
    phone.goto(f"{server.url}/ui/coverage?images={APP}%0A{PLAIN}")
    expect(phone.locator("td[data-outcome]").first).to_be_visible()
    no_horizontal_scroll(phone)
    phone.screenshot(path=str(SCREENSHOTS / "coverage-narrow.png"), full_page=True)
    narrow.close()
    assert not problems, problems
