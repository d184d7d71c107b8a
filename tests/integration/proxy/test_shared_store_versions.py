"""Two proxies sharing one PostgreSQL route store: a change set is ONE route-table version,
each proxy reports the version it serves, and whoever changed the routes can wait until
every live proxy serves it (what the playbook does instead of sleeping)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from proxy_helpers import ProxyThread, Upstream, shop_config

from strangler_proxy.bootstrap import bootstrap
from strangler_proxy.service import RouteService
from strangler_proxy.store import RouteStore

KEYS = [("GET", "/products"), ("GET", "/products/<int:id>")]


def _modes(table: object) -> tuple[int, tuple[str, ...]]:
    by_key = {r.key: str(r.mode) for r in table.routes}  # type: ignore[attr-defined]
    return table.version, tuple(by_key[k] for k in KEYS)  # type: ignore[attr-defined]


def test_a_change_set_reaches_every_proxy_as_one_version_and_is_acknowledged(
    tmp_path: Path,
    pg_url: str,
    fresh_upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> None:
    config = shop_config(tmp_path, fresh_upstreams, store_url=pg_url)
    proxies = [proxy_factory(config), proxy_factory(config)]
    store = RouteStore.from_url(pg_url)
    service = RouteService(store)
    seen: list[tuple[int, tuple[str, ...]]] = []
    failures: list[str] = []
    served_by: set[str] = set()
    stop = threading.Event()

    def sample_tables() -> None:  # what each proxy's request path would read, as often as it can
        while not stop.is_set():
            seen.extend(_modes(p.runtime.core.table) for p in proxies)

    def traffic() -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not stop.is_set():
                for p in proxies:
                    for path in ("/products", "/products/1"):
                        r = client.get(p.url + path)
                        if r.status_code != 200:
                            failures.append(f"{p.url}{path}: {r.status_code}")
                        served_by.add(r.headers.get("X-Served-By", "?"))

    threads = [threading.Thread(target=sample_tables), threading.Thread(target=traffic)]
    for t in threads:
        t.start()
    try:
        before = store.version()
        assert store.wait_served(before, timeout=5).live == 2
        timings = []
        for mode in ("extracted", "monolith", "extracted"):
            changes = [
                c
                for method, path in KEYS
                for c in service.plan(method, path, mode, service="catalog", actor="test")
            ]
            result = service.commit(changes)
            served = store.wait_served(result.version, timeout=10)
            assert (served.live, served.serving) == (2, 2), served
            timings.append(served.seconds)
            assert all(p.runtime.core.table.version >= result.version for p in proxies)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        store.close()
    mixed = {modes for _v, modes in seen if len(set(modes)) > 1}
    assert not mixed, f"a proxy served a half-applied table: {mixed}"
    versions = {v: modes for v, modes in seen}
    assert len(versions) >= 3  # the samplers saw the flips, each version with one set of modes
    assert not failures, failures[:5]
    assert {"monolith", "catalog"} <= served_by
    print(f"\nroute change reached both proxies in {', '.join(f'{t:.3f}s' for t in timings)}")


def test_a_stopped_proxy_is_no_longer_waited_for(
    tmp_path: Path,
    pg_url: str,
    fresh_upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> None:
    config = shop_config(tmp_path, fresh_upstreams, store_url=pg_url)
    first, second = proxy_factory(config), ProxyThread(bootstrap(config))
    store = RouteStore.from_url(pg_url)
    try:
        assert store.wait_served(store.version(), timeout=5).live == 2
        second.stop()
        result = RouteService(store).set_route(
            "GET", "/products", "extracted", service="catalog", actor="test"
        )
        served = store.wait_served(result.version, timeout=10)
        assert (served.live, served.serving) == (1, 1)
        assert first.runtime.core.table.version >= result.version
    finally:
        store.close()
