"""The tenant console driven in a real headless Chromium (Debian's, through Playwright).

One app (``create_app`` over the in-process service, uvicorn on a local port) on a tenant
generated as ``recserve demo`` generates its own (500 users, 400 items, 25 events each), with
four engines trained. Each test signs in as the tenant's admin, does what an operator would do
on one page, checks what the page shows against the API, and saves a screenshot under
``test-output/console/``; the time each page took to render with its data (measured in the
page) is written to ``test-output/console/timings.json``."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.api_quality import in_process_server, make_settings
from cluster import operations as ops
from deployments.app import AppArgs
from tests.conftest import missing
from training.pipeline import train_tenant_async

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
DOMAIN = "console.example"
ADMIN = "admin@console.example"
PASSWORD = "console-admin-pass-1"
SHOPPER = "shopper@console.example"
ENGINES = ["popularity", "item_knn", "user_knn", "ease"]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "console"
TIMINGS: dict[str, float] = {}


@dataclass
class Console:
    base: str
    admin_token: str
    shopper_token: str

    def api(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.base}/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=60,
        )
        payload = response.json()
        assert "errors" not in payload, payload
        return payload["data"]


def _browser_or_skip() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed", "pip install -e '.[dev]'")
    if not os.path.exists(CHROMIUM):
        missing("Debian's chromium is not installed", "apt-get install chromium")
    return sync_playwright


async def _tenant(settings: Any) -> tuple[str, str]:
    database = await ops.open_database(settings)
    try:
        tenant, _ = await ops.ensure_tenant(database, domain=DOMAIN, tier="enterprise")
        admin = await ops.issue_token_in(database, settings, domain=DOMAIN, email=ADMIN, admin=True)
        shopper = await ops.issue_token_in(database, settings, domain=DOMAIN, email=SHOPPER)
    finally:
        await database.dispose()
    await ops.ingest_synthetic(
        settings, domain=DOMAIN, users=500, items=400, clusters=8, per_user=25, seed=42
    )
    await ops.set_password(settings, domain=DOMAIN, email=ADMIN, password=PASSWORD)
    await train_tenant_async(settings, str(tenant.id), ENGINES)
    await train_tenant_async(settings, str(tenant.id), ["popularity"])  # two versions
    return admin.access_token, shopper.access_token


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    _browser_or_skip()
    settings = make_settings(tmp_path_factory.mktemp("console"))
    admin, shopper = asyncio.run(_tenant(settings))
    args = AppArgs(engines=ENGINES, version_ttl_s=0.0)
    with in_process_server(settings, args) as base:
        yield Console(base, admin, shopper)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "timings.json").write_text(json.dumps(TIMINGS, indent=2, sort_keys=True))


@pytest.fixture(scope="module")
def browser(console: Console) -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, console: Console, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda error: problems.append(str(error)))
    try:
        yield opened
        # No script error and no Content-Security-Policy violation on any page of the test
        # (the 4xx answers the test provokes on purpose are not script errors).
        assert not [p for p in problems if "status of 4" not in p], problems
    finally:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=str(OUTPUT / f"{request.node.name}.png"), full_page=True)
        context.close()


def sign_in(page: Any, console: Console) -> None:
    page.goto(f"{console.base}/console")
    page.fill("#sign-in [name=tenantDomain]", DOMAIN)
    page.fill("#sign-in [name=email]", ADMIN)
    page.fill("#sign-in [name=password]", PASSWORD)
    page.click("#sign-in button")
    ready(page, "overview")


def ready(page: Any, name: str) -> None:
    page.wait_for_selector(f"main[data-ready='{name}']", timeout=30_000)
    TIMINGS[name] = page.evaluate(f"window.consoleTimings[{name!r}]")


def go(page: Any, name: str) -> None:
    page.click(f"nav a[href='#{name}']")
    ready(page, name)


def test_sign_in_refuses_non_admins_and_keeps_the_token_out_of_urls(
    page: Any, console: Console
) -> None:
    page.goto(f"{console.base}/console/")
    page.fill("#sign-in [name=tenantDomain]", DOMAIN)
    page.fill("#sign-in [name=email]", ADMIN)
    page.fill("#sign-in [name=password]", "not-the-password")
    page.click("#sign-in button")
    assert "Invalid" in page.locator("#sign-in .error").inner_text()
    page.fill("#token-sign-in [name=token]", console.shopper_token)
    page.click("#token-sign-in button")
    refusal = page.locator("#token-sign-in .error").inner_text()
    assert SHOPPER in refusal and "admin" in refusal
    assert page.evaluate("sessionStorage.length") == 0

    sign_in(page, console)
    assert console.admin_token not in page.url
    token = page.evaluate("sessionStorage.getItem('recserve.console.token')")
    assert token and token not in page.url
    assert page.locator("#who").inner_text().startswith(ADMIN)
    page.click("#sign-out")
    page.wait_for_selector("#sign-in")
    assert page.evaluate("sessionStorage.length") == 0


def test_the_overview_shows_the_apis_numbers(page: Any, console: Console) -> None:
    sign_in(page, console)
    data = console.api("{ tenantOverview { items users interactions activeUsers } }")
    shown = data["tenantOverview"]
    for name, value in shown.items():
        assert page.locator(f"[data-number={name}] b").inner_text() == str(value)
    assert shown["items"] == 400 and shown["interactions"] > 10_000
    assert page.locator("svg[aria-label='interactions per day'] rect").count() == 30
    served = page.locator("[data-table=served-models] tbody tr")
    current = console.api("{ modelVersions { algorithm current } }")["modelVersions"]
    assert served.count() == sum(1 for v in current if v["current"])
    assert page.locator("[data-table=jobs]").count() == 1


def test_preview_a_user_and_compare_two_option_sets(page: Any, console: Console) -> None:
    sign_in(page, console)
    users = console.api("{ users(limit: 100) { id role } }")["users"]
    user = next(u["id"] for u in users[5:] if u["role"] == "user")
    page.goto(f"{console.base}/console/#preview?user={user}")
    ready(page, "preview")
    assert page.locator("[data-table=history] tbody tr").count() == 10

    def shown(pane: str) -> list[str]:
        return page.locator(f"[data-table=recommendations-{pane}] tbody tr td:nth-child(2)")

    query = """query($u: UUID!, $o: RecommendationOptions) { previewRecommendations(userId: $u,
      options: $o) { items { item { title } } } }"""

    def asked(**options: Any) -> list[str]:
        answer = console.api(query, {"u": user, "o": {"explain": True, **options}})
        return [entry["item"]["title"] for entry in answer["previewRecommendations"]["items"]]

    assert shown("A").all_inner_texts() == asked(algorithm="hybrid")
    assert shown("B").all_inner_texts() == asked(algorithm="popularity", diversify=False)
    why = page.locator("[data-table=recommendations-A] tbody tr td:nth-child(4)").first
    assert "%" in why.inner_text()  # each engine's share of the item's score
    page.select_option("#options-B [name=algorithm]", "item_knn")
    page.click("#options-B button")
    # (wait_for_function evaluates a string: the console's policy refuses that, rightly)
    page.locator("[data-pane=B] .result p", has_text=re.compile(r"^item_knn")).wait_for()
    assert shown("B").all_inner_texts() == asked(algorithm="item_knn", diversify=False)
    assert shown("A").all_inner_texts() != shown("B").all_inner_texts()


def test_create_an_item_and_find_it(page: Any, console: Console) -> None:
    from playwright.sync_api import expect

    sign_in(page, console)
    go(page, "catalogue")
    page.click("#create-item button")  # an empty title: the API's message beside the field
    error = page.locator("#create-item [name=title]").locator("xpath=..").locator(".error")
    assert error.inner_text() == "title must not be empty."
    assert console.api('{ items(search: "Console lamp") { id } }')["items"] == []
    page.fill("#create-item [name=title]", "Console lamp <b>bold</b>")
    page.fill("#create-item [name=category]", "lighting")
    page.click("#create-item button")
    ready(page, "item")
    assert page.locator("h1").inner_text() == "Console lamp <b>bold</b>"  # shown as text
    go(page, "catalogue")
    page.fill("#item-search [name=search]", "Console lamp")
    page.click("#item-search button")
    page.wait_for_url(re.compile(r"search="))
    rows = page.locator("[data-table=items] tbody tr")
    expect(rows).to_have_count(1)
    assert "lighting" in rows.first.inner_text()
    ready(page, "catalogue")


def test_promote_and_roll_back_a_model(page: Any, console: Console) -> None:
    versions = '{ modelVersions(algorithm: "popularity") { version current } }'

    def served() -> str:
        return next(v["version"] for v in console.api(versions)["modelVersions"] if v["current"])

    sign_in(page, console)
    go(page, "models")
    before = served()
    older = next(v["version"] for v in console.api(versions)["modelVersions"] if not v["current"])
    page.click(f"[data-algorithm=popularity] [data-promote='{older}']")
    page.wait_for_selector("#model-status .ok")
    assert served() == older
    page.click("[data-rollback=popularity]")
    page.wait_for_selector("#model-status .ok")
    assert served() == before


def test_an_import_with_one_bad_row_and_files_it_refuses(
    page: Any, console: Console, tmp_path: Path
) -> None:
    good = tmp_path / "lamps.csv"
    good.write_text("external_id,title,category\nimp-1,Imported lamp,lighting\nimp-2,Two\n")
    wrong = tmp_path / "lamps.txt"
    wrong.write_text("whatever")
    big = tmp_path / "big.csv"
    big.write_text("external_id,title\n" + "x,y\n" * 400_000)
    sign_in(page, console)
    go(page, "import")

    def upload(path: Path) -> None:
        page.set_input_files("#import [name=file]", str(path))
        page.click("#import button")

    upload(good)
    page.wait_for_selector("#import-report .ok")
    assert "Imported 1 items" in page.locator("#import-report").inner_text()
    assert page.locator("[data-table=bad-rows] tbody tr").all_inner_texts() == [
        "3\texpected 3 fields, found 2"
    ]
    assert console.api('{ items(search: "Imported lamp") { externalId } }')["items"] == [
        {"externalId": "imp-1"}
    ]
    for path, message in ((wrong, "must end in .csv"), (big, "exceeds")):
        upload(path)
        beside = page.locator("#import [name=file]").locator("xpath=..")
        beside.locator(".error", has_text=message).wait_for()  # the API's message, by the file
        assert beside.locator(".error").count() == 1
    assert console.api("{ tenantOverview { items } }")["tenantOverview"]["items"] <= 402


def test_a_training_job_shows_its_progress_live(page: Any, console: Console) -> None:
    sign_in(page, console)
    go(page, "models")
    page.fill("#train [name=algorithms]", "popularity")
    page.click("#train button")
    line = page.locator("#training-progress p")
    line.wait_for()
    seen: set[str] = set()
    for _ in range(600):
        status = line.get_attribute("data-status")
        if status:
            seen.add(status)
        if status in ("succeeded", "failed"):
            break
        page.wait_for_timeout(100)
    assert "succeeded" in seen, (seen, line.inner_text())
    job = line.get_attribute("data-job")
    done = console.api("query($id: String!) { trainingJob(id: $id) { status } }", {"id": job})
    assert done["trainingJob"]["status"] == "succeeded"


def test_experiments_are_created_watched_and_stopped(page: Any, console: Console) -> None:
    sign_in(page, console)
    go(page, "experiments")
    page.fill("#create-experiment [name=name]", "hybrid vs popularity")
    page.fill("#create-experiment [name=variants]", "hybrid 0.6 hybrid\npopularity 0.6 popularity")
    page.click("#create-experiment button")
    assert "sum to 1" in page.locator("#create-experiment .error").inner_text()
    page.fill("#create-experiment [name=variants]", "hybrid 0.5 hybrid\npopularity 0.5 popularity")
    page.click("#create-experiment button")
    card = page.locator("[data-experiment]").first
    card.wait_for()
    assert "running" in card.locator("h2").inner_text()
    listed = console.api("{ experiments { id status variants { name } } }")["experiments"]
    assert [v["name"] for v in listed[0]["variants"]] == ["hybrid", "popularity"]
    card.locator("button", has_text="Stop").click()
    page.locator("[data-experiment] h2", has_text="stopped").first.wait_for()
    assert console.api("{ experiments { status } }")["experiments"][0]["status"] == "stopped"
