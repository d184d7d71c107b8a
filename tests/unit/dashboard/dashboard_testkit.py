"""A real proxy runtime (admin app and dashboard) on loopback, run in a background loop.

Upstreams point at closed ports: the dashboard tests need the admin server, the store and
the guards, not real traffic (the browser tests cover traffic with real upstreams).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from strangler_proxy.bootstrap import ProxyRuntime, bootstrap
from strangler_proxy.config import config_from_mapping

TOKEN = "dashboard-test-token-0123456789"
ROUTES = [
    {"methods": ["GET", "HEAD"], "path": "/products", "service": "catalog"},
    {"methods": ["GET", "PATCH"], "path": "/products/<int:id>", "service": "catalog"},
]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class RunningProxy:
    """Starts a bootstrapped runtime on its own event loop thread; `stop()` ends it."""

    def __init__(self, tmp_path: Path, **bootstrap_kwargs: Any) -> None:
        config = config_from_mapping(
            {
                "listen_port": 0,
                "admin_port": 0,
                "admin_token": TOKEN,
                "store_url": f"sqlite:///{tmp_path / 'routes.db'}",
                "upstreams": {"monolith": closed_port_url(), "catalog": closed_port_url()},
                "shadow": {"jsonl_path": str(tmp_path / "shadow.jsonl")},
                "timeouts": {"connect": 0.5, "total": 2.0},
                "routes": ROUTES,
            }
        )
        self.runtime: ProxyRuntime = bootstrap(config, **bootstrap_kwargs)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        try:
            self._call(self.runtime.start())
        except BaseException:
            self._end_loop()
            raise
        self.admin_url = self.runtime.admin_url

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.admin_url, trust_env=False, timeout=10)

    @contextlib.contextmanager
    def signed_in(self) -> Iterator[tuple[httpx.Client, str]]:
        """A client holding a session cookie, and that session's CSRF token."""
        with self.client() as client:
            yield client, self._sign_in(client)

    def _sign_in(self, client: httpx.Client) -> str:
        resp = client.post("/dashboard/login", data={"token": TOKEN})
        assert resp.status_code == 303, resp.text
        page = client.get("/dashboard/")
        assert page.status_code == 200
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert match is not None
        return match.group(1)

    def stop(self) -> None:
        try:
            self._call(self.runtime.stop())
        finally:
            self._end_loop()
