"""Admin API auth and errors, shared-store propagation, and route flips under load."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx
import pytest
from proxy_helpers import CATALOG_ROUTES, TOKEN, ProxyThread, Upstream, base_config

from strangler_proxy.service import RouteService
from strangler_proxy.store import RouteStore

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-123456"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
)
def test_admin_api_refuses_missing_or_wrong_tokens(
    shop_proxy: ProxyThread, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=shop_proxy.admin_url, trust_env=False) as anonymous:
        for method, path in [
            ("GET", "/admin/routes"),
            ("PUT", "/admin/routes"),
            ("GET", "/admin/history"),
            ("GET", "/admin/stats"),
            ("GET", "/admin/shadow"),
            ("POST", "/admin/routes/reset"),
        ]:
            response = anonymous.request(method, path, headers=headers, json={})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
        assert anonymous.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"method": "GET", "path": "/orders/<int:id>", "mode": "extracted"}, 404, "unknown_route"),
        (
            {
                "method": "GET",
                "path": "/products/<int:id>",
                "mode": "extracted",
                "service": "billing",
            },
            422,
            "unknown_service",
        ),
        (
            {"method": "GET", "path": "/products/<int:id>", "mode": "canary:150"},
            422,
            "invalid_route",
        ),
        ({"method": "GET", "path": "/products/<int:id>"}, 422, "validation_error"),
        (
            {"method": "GET", "path": "/products/<int:id>", "mode": "shadow", "colour": 1},
            422,
            "validation_error",
        ),
        (
            {"method": "GET", "path": "/products/<int:id>", "mode": "shadow", "force": "yes"},
            422,
            "validation_error",
        ),
    ],
)
def test_bad_route_changes_get_json_errors_and_change_nothing(
    admin: httpx.Client, body: dict, status: int, code: str
) -> None:
    before = admin.get("/admin/routes").json()
    response = admin.put("/admin/routes", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert admin.get("/admin/routes").json() == before
    malformed = admin.put(
        "/admin/routes", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "malformed_json"


def test_extracted_is_refused_while_the_service_is_not_ready_unless_forced(
    admin: httpx.Client, fresh_upstreams: dict[str, Upstream]
) -> None:
    fresh_upstreams["catalog"].control(ready=False)
    change = {"method": "GET", "path": "/products/<int:id>", "mode": "extracted"}
    refused = admin.put("/admin/routes", json=change)
    assert refused.status_code == 409 and "not ready" in refused.json()["error"]["message"]
    forced = admin.put("/admin/routes", json=change | {"force": True, "reason": "drill"})
    assert forced.status_code == 200


def test_history_stats_and_metrics_report_activity(
    admin: httpx.Client, client: httpx.Client
) -> None:
    admin.put(
        "/admin/routes",
        json={
            "method": "GET",
            "path": "/products",
            "mode": "extracted",
            "reason": "go",
            "actor": "carol",
        },
    )
    for _ in range(3):
        client.get("/products")
    entry = admin.get("/admin/history?limit=1").json()["history"][0]
    assert (entry["actor"], entry["reason"], entry["old"]["mode"], entry["new"]["mode"]) == (
        "carol",
        "go",
        "monolith",
        "extracted",
    )
    series = admin.get("/admin/stats").json()["series"]
    row = next(s for s in series if s["route"] == "/products" and s["target"] == "catalog")
    assert row["requests"] == 3 and row["latency_ms"]["p99"] is not None
    metrics = httpx.get(admin.base_url.join("/metrics"), trust_env=False)  # open by default
    assert 'strangler_proxy_requests_total{route="/products",target="catalog"} 3' in metrics.text
    reset = admin.post("/admin/routes/reset", json={"reason": "rollback"})
    assert reset.status_code == 200
    assert {r["mode"] for r in admin.get("/admin/routes").json()["routes"]} == {"monolith"}
    assert client.get("/products").headers["x-served-by"] == "monolith"


def test_changes_in_a_shared_store_reach_a_second_proxy_without_a_restart(
    tmp_path: Path,
    fresh_upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> None:
    urls = {name: u.url for name, u in fresh_upstreams.items()}
    config = base_config(tmp_path, urls, routes=CATALOG_ROUTES, poll_interval=0.25)
    first = proxy_factory(config)
    second = proxy_factory(config)
    store = RouteStore.from_url(config.store_url)
    try:
        RouteService(store).set_route("GET", "/products/<int:id>", "extracted", actor="t")
        changed_at = time.monotonic()
        with httpx.Client(trust_env=False, timeout=5) as client:
            for proxy in (first, second):
                while client.get(f"{proxy.url}/products/1").headers["x-served-by"] != "catalog":
                    # a few poll intervals (0.25 s); bounded so a lost change fails, not hangs
                    assert time.monotonic() - changed_at < 5.0
                    time.sleep(0.02)
    finally:
        store.close()


async def _load(url: str, total: int, clients: int) -> list[tuple[int, str]]:
    results: list[tuple[int, str]] = []
    paths = ["/products/1", "/products", "/categories/3", "/other"]

    async def worker(index: int) -> None:
        async with aiohttp.ClientSession() as session:
            for i in range(index, total, clients):
                headers = {"X-Client-Id": f"c{i}"}
                async with session.get(url + paths[i % len(paths)], headers=headers) as resp:
                    await resp.read()
                    results.append((resp.status, resp.headers.get("X-Served-By", "")))

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return results


MAX_ROUNDS = 40


def test_route_flips_under_concurrent_load_cause_no_errors(
    shop_proxy: ProxyThread, tmp_path: Path
) -> None:
    store = RouteStore.from_url(shop_proxy.runtime.config.store_url)
    service = RouteService(store)  # no readiness guard: flips must be fast
    modes = ["monolith", "shadow", "canary:50", "extracted", "canary:12.5"]
    flips = 0
    done = asyncio.Event()

    async def flipper() -> None:
        nonlocal flips
        rnd = random.Random(7)
        while not done.is_set():
            path = rnd.choice(["/products/<int:id>", "/products", "/categories/<int:id>"])
            await asyncio.to_thread(
                service.set_route, "GET", path, rnd.choice(modes), actor="load-test"
            )
            flips += 1
            await asyncio.sleep(0.01)

    async def scenario() -> list[tuple[int, str]]:
        # Load runs in rounds until the proxy has applied at least ten route-table versions
        # while serving (bounded: a fast machine finishes a round before ten reloads).
        task = asyncio.create_task(flipper())
        results: list[tuple[int, str]] = []
        try:
            for _ in range(MAX_ROUNDS):
                results += await _load(shop_proxy.url, 500, 6)
                if shop_proxy.runtime.reloads - reloads_before >= 10 and flips >= 24:
                    break
        finally:
            done.set()
            await task
        return results

    reloads_before = shop_proxy.runtime.reloads
    try:
        results = asyncio.run(scenario())
    finally:
        store.close()
    assert len(results) >= 500
    assert [r for r in results if r[0] != 200] == []
    assert {served for _, served in results} == {"monolith", "catalog"}
    assert flips >= 24
    assert shop_proxy.runtime.reloads - reloads_before >= 10
