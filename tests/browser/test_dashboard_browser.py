"""The migration dashboard in a real headless Chromium, against a real proxy and upstreams."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from browser_helpers import CATALOG_ROUTES, TOKEN, DashboardEnv, sign_in
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def _row(page: Any, key: str) -> Any:
    return page.locator(f'#routes-body tr[data-key="{key}"]')


def _through_proxy(env: DashboardEnv, path: str, n: int = 1) -> list[httpx.Response]:
    with httpx.Client(base_url=env.proxy.url, trust_env=False, timeout=10) as client:
        return [client.get(path) for _ in range(n)]


def test_wrong_token_is_refused_and_gives_no_session(page: Any, env: DashboardEnv, shoot) -> None:
    sign_in(page, env, token="not-the-token-at-all")
    expect(page.get_by_role("alert")).to_contain_text("not the admin token")
    assert urlsplit(page.url).path == "/dashboard/login"
    assert not [c for c in page.context.cookies() if c["name"] == "strangler_dashboard"]
    shoot(page, "login-wrong-token")
    page.goto(env.url)
    assert urlsplit(page.url).path == "/dashboard/login"


def test_signed_in_user_sees_every_route_service_step_and_cdc_chart(
    page: Any, env: DashboardEnv, shoot
) -> None:
    sign_in(page, env)
    expect(page.get_by_role("heading", name="Migration overview")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "strangler_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    declared = _declared()
    rows = page.locator("#routes-body tr")
    expect(rows).to_have_count(len(declared))
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.key)")) == declared
    product = _row(page, "GET /products/<int:id>")
    expect(product.locator("td").nth(0)).to_have_text("catalog")
    expect(product.locator(".mode")).to_have_text("monolith")
    services = page.locator("#services-body")
    expect(services).to_contain_text("shadow")
    expect(services).to_contain_text("(4/8)")
    # The CDC chart is drawn by the page's script and redrawn as new lag samples arrive.
    chart = page.locator('#cdc-body tr[data-table="orders"] svg polyline')
    expect(chart).to_have_count(1)
    first = chart.get_attribute("points")
    expect(chart).not_to_have_attribute("points", first or "", timeout=5000)
    expect(page.locator('#cdc-body tr[data-table="orders"] svg')).to_have_attribute(
        "aria-label", re.compile(r"Lag of orders over the last")
    )
    # Live request rates: traffic through the proxy shows up without a reload.
    page.evaluate("window.__sameDocument = true")
    _through_proxy(env, "/products/3", 20)
    # Traffic is per path pattern: the path's first row carries cells spanning its methods.
    traffic = _row(page, "DELETE /products/<int:id>").locator("td.traffic")
    expect(traffic).to_have_count(3)
    expect(traffic.nth(0)).to_have_attribute("rowspan", "5")
    expect(traffic.nth(2)).to_have_text(re.compile(r"^2\d / 0$"))
    expect(traffic.nth(0)).not_to_have_text("–")
    assert product.locator("td.traffic").count() == 0
    assert page.evaluate("window.__sameDocument") is True
    shoot(page, "overview")


def _declared() -> list[str]:
    return sorted(f"{m} {r['path']}" for r in CATALOG_ROUTES for m in r["methods"])


def test_flipping_a_route_to_shadow_in_the_page_makes_the_proxy_shadow_it(
    page: Any, env: DashboardEnv, shoot
) -> None:
    sign_in(page, env)
    page.evaluate("window.__sameDocument = true")
    catalog_before = env.upstreams["catalog"].seen()["count"]
    _row(page, "GET /products").get_by_role("button", name="Change GET /products").click()
    expect(page.get_by_label("Mode", exact=True)).to_be_focused()
    page.get_by_label("Mode", exact=True).select_option("shadow")
    page.get_by_label(re.compile("^Reason")).fill("watch catalog answers <b>live</b>")
    page.get_by_role("button", name="Apply change").click()
    expect(page.locator("#change-result")).to_contain_text("GET /products: monolith → shadow")
    expect(_row(page, "GET /products").locator(".mode")).to_have_text("shadow")

    # The proxy now shadows: the monolith answers, the service gets a copy.
    responses = _through_proxy(env, "/products?page=1", 3)
    assert all(r.status_code == 200 for r in responses)
    assert {r.headers["X-Served-By"] for r in responses} == {"monolith"}
    assert {r.json()["upstream"] for r in responses} == {"monolith"}
    deadline = time.monotonic() + 5
    while env.upstreams["catalog"].seen()["count"] < catalog_before + 3:
        assert time.monotonic() < deadline, "the service never received the shadow copies"
        time.sleep(0.05)
    # ... and the dashboard shows the pairs and the audit entry, live.
    expect(page.locator("#shadow-body tr")).to_have_count(3)
    expect(page.locator("#shadow-body")).to_contain_text("GET /products?page=1")
    audit = page.locator("#audit-body tr").first
    expect(audit).to_contain_text("dashboard")
    expect(audit).to_contain_text("monolith → shadow")
    expect(audit).to_contain_text("watch catalog answers <b>live</b>")  # shown as text
    assert page.locator("#audit-body b").count() == 0
    assert page.evaluate("window.__sameDocument") is True
    history = httpx.get(
        env.proxy.admin_url + "/admin/history?limit=1",
        headers={"Authorization": f"Bearer {TOKEN}"},
        trust_env=False,
    ).json()["history"][0]
    assert history["actor"] == "dashboard" and history["new"]["mode"] == "shadow"
    shoot(page, "flipped-to-shadow")

    # A canary with a percentage goes through the same form.
    page.get_by_label("Endpoint", exact=True).select_option("GET /categories/<int:id>")
    page.get_by_label("Mode", exact=True).select_option("canary")
    page.get_by_label(re.compile("^Canary %")).fill("25")
    page.get_by_role("button", name="Apply change").click()
    expect(_row(page, "GET /categories/<int:id>").locator(".mode")).to_have_text("canary:25")


def test_a_seeded_parity_mismatch_shows_its_side_by_side_diff(
    page: Any, env: DashboardEnv, shoot
) -> None:
    sign_in(page, env)
    page.get_by_label("Endpoint", exact=True).select_option("GET /products/<int:id>")
    page.get_by_label("Mode", exact=True).select_option("shadow")
    page.get_by_role("button", name="Apply change").click()
    expect(_row(page, "GET /products/<int:id>").locator(".mode")).to_have_text("shadow")
    # The upstreams answer differently ("upstream": "monolith" vs "catalog"): a real mismatch
    # found by the parity comparator from a real shadow pair.
    _through_proxy(env, "/products/7")
    parity_row = page.locator("#parity-body tr", has_text="GET /products/<int:id>")
    expect(parity_row).to_have_class(re.compile("bad"))
    expect(_row(page, "GET /products/<int:id>").locator(".parity")).to_contain_text("1 mismatch")
    parity_row.get_by_role("link", name=re.compile("View diffs")).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("GET /products/<int:id>")
    diff = page.locator("table.diff").first
    upstream = diff.locator("tr", has_text="$.upstream")
    expect(upstream.locator("td.left")).to_have_text('"monolith"')
    expect(upstream.locator("td.right")).to_have_text('"catalog"')
    shoot(page, "parity-mismatch")

    # The proxy's own pair for the same request, bodies side by side.
    page.get_by_role("link", name="GET /products/7").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Shadow pair")
    changed = page.locator("table.sbs tr.changed", has_text="upstream")
    expect(changed.locator("td.left")).to_contain_text('"monolith"')
    expect(changed.locator("td.right")).to_contain_text('"catalog"')
    shoot(page, "shadow-pair-diff")


def test_guard_rail_refusal_is_shown_with_its_reason_and_force_overrides_it(
    page: Any, env: DashboardEnv, shoot
) -> None:
    catalog = env.upstreams["catalog"]
    catalog.control(ready=False)
    try:
        sign_in(page, env)
        page.get_by_label("Endpoint", exact=True).select_option("GET /products")
        page.get_by_label("Mode", exact=True).select_option("extracted")
        page.get_by_label(re.compile("^Reason")).fill("cut over")
        page.get_by_role("button", name="Apply change").click()
        result = page.locator("#change-result")
        expect(result).to_contain_text("Refused:")
        expect(result).to_contain_text("/readyz returned 503")
        expect(result).to_have_attribute("aria-live", "assertive")
        shoot(page, "guard-refusal")
        expect(_row(page, "GET /products").locator(".mode")).to_have_text("monolith")
        assert _through_proxy(env, "/products")[0].headers["X-Served-By"] == "monolith"

        # Malformed input is refused with a reason too (same validation as the CLI).
        page.get_by_label("Mode", exact=True).select_option("canary")
        page.get_by_label(re.compile("^Canary %")).fill("150")
        page.evaluate("document.getElementById('percent').removeAttribute('max')")
        page.get_by_role("button", name="Apply change").click()
        expect(result).to_contain_text("between 0 and 100")

        page.get_by_label("Mode", exact=True).select_option("extracted")
        page.get_by_label(re.compile("^Force")).check()
        page.get_by_role("button", name="Apply change").click()
        expect(result).to_contain_text("monolith → extracted")
        expect(_row(page, "GET /products").locator(".mode")).to_have_text("extracted")
        assert _through_proxy(env, "/products")[0].headers["X-Served-By"] == "catalog"
    finally:
        catalog.control(ready=True)


def test_state_changes_without_a_csrf_token_are_refused_and_sign_out_ends_the_session(
    page: Any, env: DashboardEnv
) -> None:
    sign_in(page, env)
    expect(page.locator("#routes-body tr")).to_have_count(len(_declared()))
    change = {"endpoint": "GET /products", "mode": "shadow"}
    url = env.proxy.admin_url + "/dashboard/routes"
    # The signed-in browser's cookie is sent, but the token is missing or wrong.
    missing = page.request.post(url, data=change)
    assert missing.status == 403 and missing.json()["error"]["code"] == "csrf"
    wrong = page.request.post(url, data=change, headers={"X-CSRF-Token": "forged"})
    assert wrong.status == 403
    form = page.request.post(url, form={"endpoint": "GET /products", "mode": "shadow"})
    assert form.status == 403
    status = page.evaluate(
        """async (body) => (await fetch('/dashboard/routes', {method: 'POST',
             headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)})).status""",
        change,
    )
    assert status == 403
    routes = httpx.get(
        env.proxy.admin_url + "/admin/routes",
        headers={"Authorization": f"Bearer {TOKEN}"},
        trust_env=False,
    ).json()["routes"]
    assert {r["mode"] for r in routes} == {"monolith"}

    # The bearer-token admin API still works, and its change appears live in the page.
    httpx.put(
        env.proxy.admin_url + "/admin/routes",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"method": "GET", "path": "/products", "mode": "shadow", "actor": "cli-user"},
        trust_env=False,
    ).raise_for_status()
    expect(_row(page, "GET /products").locator(".mode")).to_have_text("shadow")
    expect(page.locator("#audit-body tr").first).to_contain_text("cli-user")

    cookie = next(c for c in page.context.cookies() if c["name"] == "strangler_dashboard")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    replay = httpx.get(
        env.proxy.admin_url + "/dashboard/api/state",
        cookies={"strangler_dashboard": cookie["value"]},
        trust_env=False,
    )
    assert replay.status_code == 401


def test_a_missing_chromium_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from browser_helpers import chromium_path

    monkeypatch.setenv("CHROMIUM_PATH", "/nonexistent/chromium")
    with pytest.raises(pytest.fail.Exception, match="make browser-deps"):
        chromium_path()
