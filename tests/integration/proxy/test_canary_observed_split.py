"""A canary's observed split, as the proxy reports it in /admin/stats and /metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from proxy_helpers import ProxyThread, Upstream, shop_config

from strangler_proxy.canary import judge_split

pytestmark = pytest.mark.integration


@pytest.fixture(params=[True, False], ids=["fast-path", "aiohttp-path"])
def shop_proxy(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fresh_upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> ProxyThread:
    """The shop's proxy on either request path: both record the split in the same place."""
    return proxy_factory(shop_config(tmp_path, fresh_upstreams, fast_path=request.param))


def _set(admin: httpx.Client, method: str, path: str, mode: str) -> None:
    response = admin.put("/admin/routes", json={"method": method, "path": path, "mode": mode})
    assert response.status_code == 200, response.text


def _split(admin: httpx.Client, route: str) -> dict[str, Any]:
    (row,) = [r for r in admin.get("/admin/stats").json()["canaries"] if r["route"] == route]
    return row


def _judged(row: dict[str, Any]) -> str | None:
    return judge_split(
        row["share"],
        row["to_service"],
        row["to_monolith"],
        row["distinct_keys"],
        row["by_address"],
        row["client_key"],
    )


def test_a_canary_whose_clients_share_one_address_and_no_key_reports_one_key_and_a_warning(
    client: httpx.Client, admin: httpx.Client
) -> None:
    _set(admin, "GET", "/products/<int:id>", "canary:30")
    served = {client.get("/products/3").headers["x-served-by"] for _ in range(200)}
    assert len(served) == 1  # one address: all on one side, whatever the stage says

    row = _split(admin, "/products/<int:id>")
    assert row["share"] == 30
    assert row["requests"] == 200
    assert row["to_service"] in (0, 200)
    assert row["distinct_keys"] == 1
    assert row["by_address"] == 200
    assert row["client_key"] is None
    warning = _judged(row)
    assert warning is not None and "200 requests came from 1 client key" in warning
    assert "set [proxy] client_key" in warning
    assert row["warning"] == warning  # the proxy reports the same judgement

    metrics = admin.get("/metrics").text
    labels = 'route="/products/<int:id>",share="30"'
    assert f"strangler_proxy_canary_distinct_keys{{{labels}}} 1" in metrics
    assert f"strangler_proxy_canary_by_address_total{{{labels}}} 200" in metrics


def test_a_canary_whose_requests_lack_its_sticky_header_names_the_header(
    client: httpx.Client, admin: httpx.Client
) -> None:
    _set(admin, "GET", "/categories/<int:id>", "canary:30")
    for _ in range(60):
        client.get("/categories/1")

    row = _split(admin, "/categories/<int:id>")
    assert row["client_key"] == "header X-Client-Id"
    assert row["by_address"] == 60
    warning = _judged(row)
    assert warning is not None and "lacked the header X-Client-Id" in warning


def test_a_canary_over_many_client_keys_sends_about_its_share_and_raises_no_warning(
    client: httpx.Client, admin: httpx.Client
) -> None:
    _set(admin, "GET", "/categories/<int:id>", "canary:30")
    for i in range(300):
        client.get("/categories/1", headers={"X-Client-Id": f"user-{i}"})

    row = _split(admin, "/categories/<int:id>")
    assert row["requests"] == 300
    assert row["by_address"] == 0
    assert row["distinct_keys"] == 64 and row["distinct_keys_capped"]
    assert 20 < row["observed_share"] < 40
    assert _judged(row) is None
    assert row["warning"] is None
