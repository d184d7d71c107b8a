"""The write cut-over's hold: a route set to `held` keeps its requests waiting at the proxy,
forwarded to neither side, until the route version that releases them; they then reach only
the new owner. A hold that outlasts `hold_limit_s` answers 503 and forwards nothing."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from strangler_proxy.service import RouteService
from strangler_proxy.store import RouteStore
from tests.integration.proxy.proxy_helpers import (
    CATALOG_ROUTES,
    ProxyThread,
    Upstream,
    base_config,
    wait_for,
)

pytestmark = pytest.mark.integration

WRITE = ("POST", "/products/<int:id>")


def _flip(store: RouteStore, mode: str) -> None:
    result = RouteService(store).set_route(*WRITE, mode, actor="cut-over")

    def applied() -> bool:  # a proxy just started may not have registered itself yet
        served = store.served(result.version)
        return served.serving == served.live >= 1

    wait_for(applied)


def test_held_writes_wait_and_reach_only_the_owner_the_release_names(
    tmp_path: Path,
    fresh_upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> None:
    urls = {name: u.url for name, u in fresh_upstreams.items()}
    config = base_config(tmp_path, urls, routes=CATALOG_ROUTES, poll_interval=0.05)
    proxy = proxy_factory(config)
    store = RouteStore.from_url(config.store_url)
    try:
        _flip(store, "held")
        with httpx.Client(base_url=proxy.url, trust_env=False, timeout=30) as client:
            # a read of another route is not held
            assert client.get("/products").headers["x-served-by"] == "monolith"
            with ThreadPoolExecutor(4) as pool:
                pending = [
                    pool.submit(client.post, f"/products/{i}", json={"n": i}) for i in range(4)
                ]
                wait_for(lambda: proxy.runtime.core.stats.counters["held_requests"] == 4)
                assert not any(f.done() for f in pending)
                assert fresh_upstreams["catalog"].seen()["count"] == 0
                monolith_before = fresh_upstreams["monolith"].seen()["count"]
                _flip(store, "extracted")
                answers = [f.result(timeout=10) for f in pending]
        assert [a.status_code for a in answers] == [200] * 4
        assert {a.json()["upstream"] for a in answers} == {"catalog"}
        assert fresh_upstreams["catalog"].seen()["count"] == 4
        assert fresh_upstreams["monolith"].seen()["count"] == monolith_before  # none went there
        assert proxy.runtime.core.stats.counters["held_expired"] == 0
    finally:
        store.close()


def test_a_hold_that_outlasts_its_limit_answers_503_and_forwards_nothing(
    tmp_path: Path,
    fresh_upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> None:
    urls = {name: u.url for name, u in fresh_upstreams.items()}
    config = base_config(
        tmp_path, urls, routes=CATALOG_ROUTES, poll_interval=0.05, hold_limit_s=0.3
    )
    proxy = proxy_factory(config)
    store = RouteStore.from_url(config.store_url)
    try:
        _flip(store, "held")
        with httpx.Client(base_url=proxy.url, trust_env=False, timeout=30) as client:
            answer = client.post("/products/9", json={"n": 9})
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "write_cutover"
        assert sum(u.seen()["count"] for u in fresh_upstreams.values()) == 0
        assert proxy.runtime.core.stats.counters["held_expired"] == 1
    finally:
        store.close()
