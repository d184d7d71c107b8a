"""Helpers for the proxy integration tests: upstream processes and in-thread proxies."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from strangler_proxy.bootstrap import ProxyRuntime
from strangler_proxy.config import ProxyConfig, ShadowSettings, Timeouts, config_from_mapping

UPSTREAM_SCRIPT = Path(__file__).with_name("upstream_app.py")
TOKEN = "test-admin-token-0123456789"


class Upstream:
    """One upstream_app.py process; ended by pid."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(UPSTREAM_SCRIPT), name, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        if not ready:
            self.kill()
            raise RuntimeError(f"upstream {name} did not start")
        self.port = int(self.proc.stdout.readline().strip())
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, trust_env=False, timeout=5)

    def control(self, **settings: Any) -> None:
        self.client.post("/__control", json=settings).raise_for_status()

    def seen(self) -> dict[str, int]:
        return self.client.get("/__seen").json()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.client.close()
        self.kill()


class ProxyThread:
    """Runs a ProxyRuntime on its own event loop in a daemon thread."""

    def __init__(self, runtime: ProxyRuntime) -> None:
        self.runtime = runtime
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(runtime.start())
        self.url = runtime.proxy_url
        self.admin_url = runtime.admin_url

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.runtime.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@contextmanager
def running_upstreams(*names: str) -> Iterator[dict[str, Upstream]]:
    """One upstream process per name, all ended (by pid) however the block ends."""
    started: dict[str, Upstream] = {}
    try:
        for name in names:
            started[name] = Upstream(name)
        yield started
    finally:
        for upstream in started.values():
            upstream.close()


@contextmanager
def admin_client(proxy: ProxyThread) -> Iterator[httpx.Client]:
    """An httpx client on the proxy's admin API, signed in with the test token."""
    with httpx.Client(
        base_url=proxy.admin_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        trust_env=False,
        timeout=10,
    ) as client:
        yield client


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def shop_config(tmp_path: Path, upstreams: dict[str, Upstream], **overrides: Any) -> ProxyConfig:
    """`base_config` in front of these upstreams with the catalog routes."""
    return base_config(
        tmp_path, {name: u.url for name, u in upstreams.items()}, routes=CATALOG_ROUTES, **overrides
    )


def base_config(tmp_path: Path, upstream_urls: dict[str, str], **overrides: Any) -> ProxyConfig:
    data: dict[str, Any] = {
        "listen_port": 0,
        "admin_port": 0,
        "admin_token": TOKEN,
        "store_url": f"sqlite:///{tmp_path / 'routes.db'}",
        "served_by_header": True,
        "upstreams": upstream_urls,
        "poll_interval": 0.1,
        "shutdown_timeout": 5.0,
    }
    data.update(overrides)
    config = config_from_mapping(data)
    if "shadow" not in overrides:
        from dataclasses import replace

        config = replace(config, shadow=ShadowSettings(jsonl_path=str(tmp_path / "shadow.jsonl")))
    if "timeouts" not in overrides:
        from dataclasses import replace

        config = replace(config, timeouts=Timeouts(connect=1.0, total=5.0))
    return config


CATALOG_ROUTES = [
    {"methods": ["GET", "HEAD"], "path": "/products", "service": "catalog"},
    {
        "methods": ["GET", "PATCH", "PUT", "DELETE", "POST"],
        "path": "/products/<int:id>",
        "service": "catalog",
    },
    {"methods": ["POST"], "path": "/products", "service": "catalog"},
    {
        "methods": ["GET"],
        "path": "/categories/<int:id>",
        "service": "catalog",
        "sticky_header": "X-Client-Id",
    },
]
