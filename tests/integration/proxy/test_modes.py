"""Each routing mode end to end against real upstream processes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from proxy_helpers import CATALOG_ROUTES, ProxyThread, Upstream, base_config, wait_for

from kitcore.net import free_port
from strangler_proxy.config import BreakerSettings, Timeouts

pytestmark = pytest.mark.integration


def _set(admin: httpx.Client, method: str, path: str, mode: str, **extra: object) -> None:
    response = admin.put(
        "/admin/routes", json={"method": method, "path": path, "mode": mode, **extra}
    )
    assert response.status_code == 200, response.text


def test_monolith_mode_forwards_faithfully(client: httpx.Client) -> None:
    response = client.post(
        "/orders/7/items?b=2&a=%20x&a=1",
        content=b'{"qty": 3}',
        headers={
            "Content-Type": "application/json",
            "X-Request-ID": "req-123",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "Connection": "keep-alive, X-Hop-Secret",
            "X-Hop-Secret": "drop me",
            "Keep-Alive": "timeout=5",
            "X-Forwarded-For": "10.0.0.1",
        },
    )
    assert response.status_code == 200
    echo = response.json()
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert echo["upstream"] == "monolith"
    assert (echo["method"], echo["path"], echo["body"]) == (
        "POST",
        "/orders/7/items?b=2&a=%20x&a=1",
        '{"qty": 3}',
    )
    assert headers["x-request-id"] == "req-123"
    assert headers["traceparent"].startswith("00-0af7651916cd43dd")
    assert headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"].startswith("127.0.0.1:")
    assert "x-hop-secret" not in headers and "keep-alive" not in headers
    assert response.headers["x-served-by"] == "monolith"
    assert "x-secret-hop" not in response.headers  # listed in the upstream's Connection header
    assert response.headers["set-cookie"] == "upstream=monolith; Path=/"


def test_a_request_id_is_generated_when_absent(client: httpx.Client) -> None:
    headers = dict((k.lower(), v) for k, v in client.get("/x").json()["headers"])
    assert len(headers["x-request-id"]) == 32


def test_large_bodies_stream_both_ways(client: httpx.Client) -> None:
    payload = b"z" * (3 * 1024 * 1024)

    def chunks():  # no Content-Length: chunked upload
        for i in range(0, len(payload), 100_000):
            yield payload[i : i + 100_000]

    response = client.put("/blob", content=chunks())
    assert response.status_code == 200
    assert response.json()["body_len"] == len(payload)
    streamed = client.get("/stream?n=2000000")
    assert streamed.status_code == 200 and len(streamed.content) == 2_000_000


def test_head_keeps_the_upstream_content_length_without_a_body(client: httpx.Client) -> None:
    response = client.head("/products")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) > 0
    assert response.content == b""


def test_shadow_answers_from_the_monolith_and_records_the_pair(
    shop_proxy: ProxyThread,
    client: httpx.Client,
    admin: httpx.Client,
) -> None:
    _set(admin, "GET", "/products/<int:id>", "shadow")
    response = client.get(
        "/products/9?full=1", headers={"Authorization": "Bearer user-secret", "Cookie": "sid=abc"}
    )
    assert response.json()["upstream"] == "monolith"
    assert response.headers["x-served-by"] == "monolith"
    wait_for(lambda: admin.get("/admin/shadow").json()["total"] >= 1)
    pair = admin.get("/admin/shadow").json()["pairs"][0]
    assert pair["route"] == "GET /products/<int:id>"
    assert pair["request"]["path"] == "/products/9?full=1"
    assert json.loads(pair["monolith"]["body"])["upstream"] == "monolith"
    assert json.loads(pair["service_response"]["body"])["upstream"] == "catalog"
    recorded_headers = json.dumps([pair["request"]["headers"], pair["monolith"]["headers"]])
    assert "user-secret" not in recorded_headers and "sid=abc" not in recorded_headers
    assert dict(pair["request"]["headers"])["Authorization"] == "[redacted]"
    assert dict(pair["monolith"]["headers"])["Set-Cookie"] == "[redacted]"
    shadow_file = Path(shop_proxy.runtime.config.shadow.jsonl_path)
    wait_for(lambda: shadow_file.exists() and shadow_file.read_text().count("\n") >= 1)


def test_shadow_never_waits_for_a_held_service_nor_shows_its_failure(
    shop_proxy: ProxyThread,
    client: httpx.Client,
    admin: httpx.Client,
    fresh_upstreams: dict[str, Upstream],
) -> None:
    catalog = fresh_upstreams["catalog"]
    _set(admin, "GET", "/products/<int:id>", "shadow")
    catalog.control(hold=True, status=500)
    response = client.get("/products/1")
    # The client has its answer while the service is provably still holding the copy.
    assert response.status_code == 200 and response.json()["upstream"] == "monolith"
    wait_for(lambda: catalog.seen()["held"] == 1)
    assert catalog.seen()["answered"] == 0
    assert admin.get("/admin/shadow").json()["total"] == 0
    catalog.control(hold=False)
    wait_for(lambda: admin.get("/admin/shadow").json()["total"] == 1)
    pair = admin.get("/admin/shadow").json()["pairs"][0]
    assert pair["service_response"]["status"] == 500
    catalog.control(close=True)
    assert client.get("/products/2").status_code == 200
    wait_for(lambda: admin.get("/admin/shadow").json()["total"] == 2)
    assert admin.get("/admin/shadow").json()["pairs"][0]["service_error"]


def test_shadow_copies_writes_only_when_the_route_opts_in(
    client: httpx.Client,
    admin: httpx.Client,
    fresh_upstreams: dict[str, Upstream],
) -> None:
    catalog = fresh_upstreams["catalog"]
    _set(admin, "PATCH", "/products/<int:id>", "shadow")
    assert client.patch("/products/1", json={"name": "x"}).json()["upstream"] == "monolith"
    assert admin.get("/admin/stats").json()["counters"]["shadow_skipped_unsafe"] == 1
    _set(admin, "PATCH", "/products/<int:id>", "shadow", shadow_writes=True)
    assert client.patch("/products/1", json={"name": "y"}).json()["upstream"] == "monolith"
    wait_for(lambda: catalog.seen()["answered"] == 1)
    pair = admin.get("/admin/shadow").json()["pairs"][0]
    assert pair["request"]["body"] == '{"name":"y"}'


def test_canary_is_sticky_per_client_key_and_sends_about_the_share(
    client: httpx.Client,
    admin: httpx.Client,
) -> None:
    _set(admin, "GET", "/categories/<int:id>", "canary:30")
    served = {}
    for i in range(300):
        response = client.get("/categories/1", headers={"X-Client-Id": f"user-{i}"})
        served[i] = response.headers["x-served-by"]
    share = sum(v == "catalog" for v in served.values()) / len(served)
    assert 0.2 < share < 0.4
    for i in range(0, 300, 10):
        again = client.get("/categories/1", headers={"X-Client-Id": f"user-{i}"})
        assert again.headers["x-served-by"] == served[i]
    _set(admin, "GET", "/categories/<int:id>", "canary:0")
    assert client.get("/categories/1").headers["x-served-by"] == "monolith"
    _set(admin, "GET", "/categories/<int:id>", "canary:100")
    assert client.get("/categories/1").headers["x-served-by"] == "catalog"


def test_extracted_mode_falls_back_for_idempotent_requests_on_5xx(
    client: httpx.Client,
    admin: httpx.Client,
    fresh_upstreams: dict[str, Upstream],
) -> None:
    _set(admin, "GET,POST", "/products/<int:id>", "extracted")
    assert client.get("/products/3").json()["upstream"] == "catalog"
    fresh_upstreams["catalog"].control(status=503)
    response = client.get("/products/3")
    assert response.status_code == 200 and response.json()["upstream"] == "monolith"
    assert client.post("/products/3", json={}).status_code == 503  # not idempotent: no fallback
    _set(admin, "GET", "/products/<int:id>", "extracted", fallback=False)
    assert client.get("/products/3").status_code == 503


def test_breaker_opens_when_the_service_is_killed_and_recovers_when_it_returns(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    upstream_factory: Callable[..., Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> None:
    port = free_port()
    service = upstream_factory("orders", port)
    config = base_config(
        tmp_path,
        {"monolith": upstreams["monolith"].url, "orders": service.url},
        routes=[
            {
                "methods": ["GET"],
                "path": "/orders/<int:id>",
                "service": "orders",
                "mode": "extracted",
            }
        ],
        breaker=BreakerSettings(failure_threshold=2, open_seconds=0.5).__dict__,
    )
    proxy = proxy_factory(config, guards=[])
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=10) as client:
        assert client.get("/orders/1").headers["x-served-by"] == "orders"
        service.kill()  # SIGKILL
        for _ in range(6):
            response = client.get("/orders/1")
            assert response.status_code == 200
            assert response.headers["x-served-by"] == "monolith"
        core = proxy.runtime.core
        assert core.breakers["orders"].state == "open"
        assert core.stats.counters["breaker_short_circuits"] >= 3
        upstream_factory("orders", port)  # the service comes back on the same address
        wait_for(lambda: client.get("/orders/1").headers["x-served-by"] == "orders")
        assert core.breakers["orders"].state == "closed"


def test_dead_upstream_gives_502_and_slow_upstream_gives_504_with_json(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = base_config(
        tmp_path,
        {"monolith": upstreams["monolith"].url, "catalog": dead},
        routes=[
            {
                "methods": ["GET"],
                "path": "/products/<int:id>",
                "service": "catalog",
                "mode": "extracted",
                "fallback": False,
            }
        ],
        timeouts=Timeouts(connect=1.0, total=0.5).__dict__,
    )
    proxy = proxy_factory(config, guards=[])
    upstreams["monolith"].control(reset=True, delay=3)
    try:
        with httpx.Client(base_url=proxy.url, trust_env=False, timeout=10) as client:
            down = client.get("/products/1")
            assert down.status_code == 502
            assert down.json()["error"] | {"message": ""} == {
                "code": "upstream_unavailable",
                "message": "",
                "route": "/products/<int:id>",
                "service": "catalog",
            }
            slow = client.get("/anything")
            assert slow.status_code == 504
            assert slow.json()["error"]["code"] == "upstream_timeout"
            assert slow.json()["error"]["service"] == "monolith"
    finally:
        upstreams["monolith"].control(reset=True)


def test_routes_from_the_catalog_fixture_are_all_declared(admin: httpx.Client) -> None:
    routes = admin.get("/admin/routes").json()["routes"]
    declared = {(r["method"], r["path"]) for r in routes}
    expected = {(m, r["path"]) for r in CATALOG_ROUTES for m in r["methods"]}
    assert declared == expected
