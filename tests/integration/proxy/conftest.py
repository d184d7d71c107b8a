"""Fixtures: real upstream processes and real proxies running in a background event loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from proxy_helpers import ProxyThread, Upstream, admin_client, running_upstreams, shop_config

from strangler_proxy.bootstrap import bootstrap
from strangler_proxy.config import ProxyConfig


@pytest.fixture(scope="session")
def upstreams() -> Iterator[dict[str, Upstream]]:
    with running_upstreams("monolith", "catalog") as started:
        yield started


@pytest.fixture(autouse=False)
def fresh_upstreams(upstreams: dict[str, Upstream]) -> dict[str, Upstream]:
    for upstream in upstreams.values():
        upstream.control(reset=True)
    return upstreams


@pytest.fixture
def upstream_factory() -> Iterator[Callable[..., Upstream]]:
    made: list[Upstream] = []

    def make(name: str, port: int = 0) -> Upstream:
        upstream = Upstream(name, port)
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        upstream.close()


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[Callable[..., ProxyThread]]:
    started: list[ProxyThread] = []

    def make(config: ProxyConfig, **kwargs: Any) -> ProxyThread:
        proxy = ProxyThread(bootstrap(config, **kwargs))
        started.append(proxy)
        return proxy

    yield make
    for proxy in reversed(started):
        proxy.stop()


@pytest.fixture
def shop_proxy(
    tmp_path: Path,
    fresh_upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> ProxyThread:
    return proxy_factory(shop_config(tmp_path, fresh_upstreams))


@pytest.fixture
def admin(shop_proxy: ProxyThread) -> Iterator[httpx.Client]:
    with admin_client(shop_proxy) as client:
        yield client


@pytest.fixture
def client(shop_proxy: ProxyThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shop_proxy.url, trust_env=False, timeout=10) as c:
        yield c
