"""The dashboard on a real admin server: sign-in, sessions, CSRF, changes, refusals, headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashboard_testkit import TOKEN, RunningProxy

from strangler_proxy.dashboard.ports import (
    EndpointParity,
    ParityProvider,
    PlaybookProvider,
    PlaybookStep,
)


class BrokenParity(ParityProvider):
    def endpoint_stats(self) -> list[EndpointParity]:
        raise RuntimeError("stats database is locked")


class OnePlaybook(PlaybookProvider):
    def steps(self) -> dict[str, PlaybookStep]:
        return {"catalog": PlaybookStep("catalog", "verify", 3, 8, "waiting")}


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[RunningProxy]:
    running = RunningProxy(tmp_path, playbook=OnePlaybook())
    try:
        yield running
    finally:
        running.stop()


def _history(proxy: RunningProxy) -> list[dict[str, object]]:
    with proxy.client() as client:
        return client.get("/admin/history", headers={"Authorization": f"Bearer {TOKEN}"}).json()[
            "history"
        ]


def test_pages_need_a_session_and_the_bearer_api_is_unchanged(proxy: RunningProxy) -> None:
    with proxy.client() as client:
        assert client.get("/").headers["location"] == "/dashboard/"
        page = client.get("/dashboard/")
        assert page.status_code == 303 and page.headers["location"] == "/dashboard/login"
        api = client.get("/dashboard/api/state")
        assert api.status_code == 401 and api.json()["error"]["code"] == "unauthorized"
        assert client.get("/dashboard/mismatches?endpoint=x").status_code == 303
        assert client.get("/admin/routes").status_code == 401
        assert client.get("/dashboard/../admin/routes").status_code == 401
        ok = client.get("/admin/routes", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        # A session cookie is not a bearer token.
        with proxy.signed_in() as (signed, _):
            assert signed.get("/admin/routes").status_code == 401


def test_a_wrong_token_gets_no_cookie_and_the_right_one_a_strict_httponly_cookie(
    proxy: RunningProxy,
) -> None:
    with proxy.client() as client:
        wrong = client.post("/dashboard/login", data={"token": TOKEN + "x"})
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        assert "not the admin token" in wrong.text
        right = client.post("/dashboard/login", data={"token": TOKEN})
        assert right.status_code == 303
        cookie = right.headers["set-cookie"]
        for flag in ("HttpOnly", "SameSite=Strict", "Path=/dashboard"):
            assert flag in cookie
        assert TOKEN not in cookie


def test_state_lists_routes_services_and_playbook_steps(proxy: RunningProxy) -> None:
    with proxy.signed_in() as (client, _):
        state = client.get("/dashboard/api/state").json()
    assert [r["key"] for r in state["routes"]] == [
        "GET /products",
        "HEAD /products",
        "GET /products/<int:id>",
        "PATCH /products/<int:id>",
    ]
    assert [r["path_rows"] for r in state["routes"]] == [2, 0, 2, 0]
    catalog = next(s for s in state["services"] if s["name"] == "catalog")
    assert catalog["step"]["step"] == "verify" and catalog["routes"] == 4
    assert state["audit"][0]["actor"] == "config"
    assert state["problems"] == []


def test_changes_need_this_sessions_csrf_token(proxy: RunningProxy) -> None:
    change = {"endpoint": "GET /products", "mode": "shadow"}
    with proxy.signed_in() as (client, csrf), proxy.signed_in() as (_, other_csrf):
        assert client.post("/dashboard/routes", json=change).status_code == 403
        bad = client.post("/dashboard/routes", json=change, headers={"X-CSRF-Token": "nope"})
        assert bad.status_code == 403 and bad.json()["error"]["code"] == "csrf"
        stolen = client.post("/dashboard/routes", json=change, headers={"X-CSRF-Token": other_csrf})
        assert stolen.status_code == 403
        assert client.post("/dashboard/reset", json={}).status_code == 403
        assert client.post("/dashboard/logout").status_code == 403
        assert _history(proxy)[0]["actor"] == "config"
        ok = client.post("/dashboard/routes", json=change, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200, ok.text
    entry = _history(proxy)[0]
    assert entry["actor"] == "dashboard" and entry["new"]["mode"] == "shadow"  # type: ignore[index]


def test_cross_site_requests_are_refused_even_with_the_token(proxy: RunningProxy) -> None:
    change = {"endpoint": "GET /products", "mode": "shadow"}
    with proxy.signed_in() as (client, csrf):
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            resp = client.post(
                "/dashboard/routes", json=change, headers={"X-CSRF-Token": csrf, **headers}
            )
            assert resp.status_code == 403 and resp.json()["error"]["code"] == "cross_site"
        login = client.post(
            "/dashboard/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"}
        )
        assert login.status_code == 403


def test_guard_refusals_and_invalid_modes_come_back_with_their_reasons(
    proxy: RunningProxy,
) -> None:
    with proxy.signed_in() as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        refused = client.post(
            "/dashboard/routes",
            json={"endpoint": "GET /products", "mode": "extracted", "reason": "go"},
            headers=headers,
        )
        assert refused.status_code == 409
        assert "/readyz unreachable" in refused.json()["error"]["message"]
        cases = [
            ({"endpoint": "GET /orders", "mode": "shadow"}, 404, "unknown_route"),
            (
                {"endpoint": "GET /products", "mode": "canary", "percent": "150"},
                422,
                "invalid_route",
            ),
            (
                {"endpoint": "GET /products", "mode": "shadow", "service": "billing"},
                422,
                "unknown_service",
            ),
            ({"endpoint": "GET /products", "mode": "sideways"}, 422, "validation_error"),
        ]
        for body, status, code in cases:
            resp = client.post("/dashboard/routes", json=body, headers=headers)
            assert (resp.status_code, resp.json()["error"]["code"]) == (status, code)
        assert (
            client.post(
                "/dashboard/routes",
                content=b"{",
                headers={**headers, "Content-Type": "application/json"},
            ).status_code
            == 400
        )
        assert _history(proxy)[0]["actor"] == "config"  # nothing changed
        forced = client.post(
            "/dashboard/routes",
            json={"endpoint": "GET /products", "mode": "canary", "percent": "10", "force": True},
            headers=headers,
        )
        assert forced.status_code == 200
        assert "monolith → canary:10" in forced.json()["message"]
        state = client.get("/dashboard/api/state").json()
    assert next(r for r in state["routes"] if r["key"] == "GET /products")["mode"] == "canary:10"
    assert proxy.runtime.core.table.get("GET", "/products").mode.kind == "canary"  # type: ignore[union-attr]


def test_the_form_post_without_script_renders_the_page_with_the_outcome(
    proxy: RunningProxy,
) -> None:
    with proxy.signed_in() as (client, csrf):
        refused = client.post(
            "/dashboard/routes",
            data={
                "csrf_token": csrf,
                "endpoint": "GET /products",
                "mode": "extracted",
                "reason": "<i>now</i>",
            },
        )
        assert refused.status_code == 409
        assert "Refused:" in refused.text and "/readyz unreachable" in refused.text
        assert 'value="&lt;i&gt;now&lt;/i&gt;"' in refused.text  # the form keeps its values
        done = client.post(
            "/dashboard/routes",
            data={"csrf_token": csrf, "endpoint": "GET /products", "mode": "shadow"},
        )
        assert done.status_code == 200 and "GET /products: monolith → shadow" in done.text
        reset = client.post("/dashboard/reset", data={"csrf_token": csrf})
        assert reset.status_code == 200 and "back on the monolith" in reset.text
    assert _history(proxy)[0]["actor"] == "dashboard"


def test_signing_out_revokes_the_session(proxy: RunningProxy) -> None:
    with proxy.signed_in() as (client, csrf):
        cookie = client.cookies.get("strangler_dashboard")
        out = client.post("/dashboard/logout", data={"csrf_token": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
    with httpx.Client(base_url=proxy.admin_url, trust_env=False) as replay:
        replay.cookies.set("strangler_dashboard", cookie or "", path="/dashboard")
        assert replay.get("/dashboard/api/state").status_code == 401


def test_dashboard_responses_carry_a_strict_content_security_policy(proxy: RunningProxy) -> None:
    with proxy.signed_in() as (client, _):
        page = client.get("/dashboard/")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        js = client.get("/dashboard/static/dashboard.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith(
            "application/javascript"
        )
        assert client.get("/dashboard/static/..%2frender.py").status_code == 404
        assert client.get("/dashboard/static/nope.js").status_code == 404
        admin = client.get("/admin/routes", headers={"Authorization": f"Bearer {TOKEN}"})
        assert "content-security-policy" not in admin.headers


def test_too_many_wrong_tokens_are_slowed_down(proxy: RunningProxy) -> None:
    with proxy.client() as client:
        codes = [
            client.post("/dashboard/login", data={"token": "wrong"}).status_code for _ in range(11)
        ]
        assert codes[:10] == [401] * 10 and codes[10] == 429
        assert client.post("/dashboard/login", data={"token": TOKEN}).status_code == 429


def test_a_failing_provider_is_shown_as_a_problem_not_an_error_page(tmp_path: Path) -> None:
    running = RunningProxy(tmp_path, parity=BrokenParity())
    try:
        with running.signed_in() as (client, _):
            state = client.get("/dashboard/api/state").json()
            assert state["problems"] == [
                "parity provider failed: RuntimeError: stats database is locked"
            ]
            page = client.get("/dashboard/mismatches", params={"endpoint": "GET /products"})
            assert page.status_code == 200 and "stats database is locked" in page.text
    finally:
        running.stop()


def test_the_dashboard_can_be_turned_off(tmp_path: Path) -> None:
    running = RunningProxy(tmp_path, dashboard=False)
    try:
        with running.client() as client:
            assert client.get("/dashboard/").status_code == 401
            assert client.get("/").status_code == 401
    finally:
        running.stop()


def test_unknown_shadow_pairs_give_a_not_found_page(proxy: RunningProxy) -> None:
    with proxy.signed_in() as (client, _):
        resp = client.get("/dashboard/shadow/does-not-exist")
        assert resp.status_code == 404 and "Shadow pair not found" in resp.text


def test_a_canary_that_saw_one_client_key_is_shown_as_a_problem(proxy: RunningProxy) -> None:
    with proxy.client() as client:
        changed = client.put(
            "/admin/routes",
            json={"method": "GET", "path": "/products", "mode": "canary:30", "force": True},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert changed.status_code == 200, changed.text
    split = proxy.runtime.core.stats.canary("/products", 3000, None)
    for _ in range(60):
        split.observe(False, 1234, True)
    with proxy.signed_in() as (client, _):
        problems = client.get("/dashboard/api/state").json()["problems"]
    assert problems == [
        "canary /products (canary:30) as observed: all 60 requests came from 1 client key: "
        "the canary cannot split them (0 % to the service at a 30 % stage); no client key is "
        "configured, so clients are told apart by address alone (all one behind a load "
        "balancer or NAT): set [proxy] client_key"
    ]
