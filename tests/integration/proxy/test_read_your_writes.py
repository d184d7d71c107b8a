"""Read-your-writes pinning and the configured client key, on both request paths."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from proxy_helpers import ProxyThread, Upstream, base_config

pytestmark = pytest.mark.integration

ROUTES = [
    {"methods": ["POST"], "path": "/products", "service": "catalog", "mode": "monolith"},
    {"methods": ["GET", "HEAD"], "path": "/products/<int:id>", "service": "catalog"},
]


@pytest.fixture
def ryw_proxy(
    tmp_path: Path,
    fresh_upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> tuple[ProxyThread, list[float]]:
    now = [1000.0]
    config = base_config(
        tmp_path,
        {name: u.url for name, u in fresh_upstreams.items()},
        routes=ROUTES,
        client_key={"header": "X-Client-Id"},
        ryw_window_s={"catalog": 5.0},
    )
    proxy = proxy_factory(config, clock=lambda: now[0])
    with httpx.Client(base_url=proxy.admin_url, trust_env=False, timeout=5) as admin:
        admin.headers["Authorization"] = "Bearer test-admin-token-0123456789"
        changed = admin.put(
            "/admin/routes",
            json={"method": "GET", "path": "/products/<int:id>", "mode": "extracted"},
        )
        assert changed.status_code == 200, changed.text
    return proxy, now


def _served_by_http10(proxy: ProxyThread, client: str) -> str:
    """One GET over HTTP/1.0 (the aiohttp path): which side answered."""
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET /products/3 HTTP/1.0\r\nX-Client-Id: {client}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode().lower()
    return next(
        line.split(": ")[1] for line in head.split("\r\n") if line.startswith("x-served-by")
    )


def test_a_client_reads_its_write_from_the_side_that_took_it_on_both_paths(
    ryw_proxy: tuple[ProxyThread, list[float]],
) -> None:
    proxy, now = ryw_proxy
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=5) as client:
        writer = {"X-Client-Id": "writer"}
        assert client.get("/products/3", headers=writer).headers["x-served-by"] == "catalog"
        assert client.post("/products", json={}, headers=writer).headers["x-served-by"] == (
            "monolith"
        )
        for _ in range(3):  # the fast path
            assert client.get("/products/3", headers=writer).headers["x-served-by"] == "monolith"
        assert _served_by_http10(proxy, "writer") == "monolith"  # the aiohttp path
        other = {"X-Client-Id": "reader"}  # another client is not pinned
        assert client.get("/products/3", headers=other).headers["x-served-by"] == "catalog"
        assert _served_by_http10(proxy, "reader") == "catalog"
        now[0] += 5.1  # the window is over
        assert client.get("/products/3", headers=writer).headers["x-served-by"] == "catalog"
        assert _served_by_http10(proxy, "writer") == "catalog"
    stats = proxy.runtime.core.stats
    assert stats.counters["ryw_pinned_reads"] == 4
    assert stats.counters["ryw_writes_pinned"] == 1
