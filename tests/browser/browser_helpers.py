"""Helpers for the dashboard browser tests: Chromium lookup, providers, sign-in.

Reuses the proxy integration helpers (real upstream processes, in-thread proxies).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

PROXY_TESTS = Path(__file__).resolve().parents[1] / "integration" / "proxy"
if str(PROXY_TESTS) not in sys.path:
    sys.path.insert(0, str(PROXY_TESTS))

from proxy_helpers import (  # noqa: E402
    CATALOG_ROUTES,
    TOKEN,
    ProxyThread,
    Upstream,
    base_config,
    running_upstreams,
    shop_config,
)

from parity.recording import MemoryStatsStore, PairSink  # noqa: E402
from strangler_proxy.dashboard.ports import (  # noqa: E402
    CdcProvider,
    PlaybookProvider,
    PlaybookStep,
    TableLag,
)
from strangler_proxy.shadow import ShadowPair, ShadowSink  # noqa: E402

__all__ = [
    "CATALOG_ROUTES",
    "CHROMIUM_ARGS",
    "SCREENSHOTS",
    "TOKEN",
    "DashboardEnv",
    "FixedPlaybook",
    "ParityBridge",
    "ProxyThread",
    "SawtoothLag",
    "Upstream",
    "base_config",
    "chromium_path",
    "running_upstreams",
    "shop_config",
    "sign_in",
]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """The system Chromium, or a failure that says how to install it."""
    path = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    if not Path(path).is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"Chromium not found at {path}: the browser tests need Debian's chromium. "
            "Run `make browser-deps` (apt-get install -y chromium, as root) or set CHROMIUM_PATH.",
            pytrace=False,
        )
    return path


class ParityBridge(ShadowSink):
    """Feeds the proxy's shadow pairs to the real parity comparator (what the kit will wire)."""

    def __init__(self, sink: PairSink) -> None:
        self.sink = sink

    def record(self, pair: ShadowPair) -> None:
        data = pair.to_dict()
        path, _, query = str(data["request"]["path"]).partition("?")  # type: ignore[index]
        service = data["service_response"] or {}
        self.sink.record(
            {
                "method": data["request"]["method"],  # type: ignore[index]
                "path": path,
                "query": query,
                "request_headers": dict(data["request"]["headers"]),  # type: ignore[index]
                "control": data["monolith"],
                "candidate": service or None,
                "candidate_status": service.get("status") if service else None,
                "candidate_error": data["service_error"],
            }
        )


class SawtoothLag(CdcProvider):
    """A CDC provider whose `orders` lag rises and drains every 6 s; `customers` is caught up."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def lag(self) -> list[TableLag]:
        phase = (time.monotonic() - self.started) % 6.0
        return [
            TableLag("customers", 0, 0.0, "shop.public.customers"),
            TableLag("orders", int(phase * 40), round(phase, 2), "shop.public.orders"),
        ]


class FixedPlaybook(PlaybookProvider):
    def steps(self) -> dict[str, PlaybookStep]:
        return {"catalog": PlaybookStep("catalog", "shadow", 4, 8, "in progress")}


@dataclass
class DashboardEnv:
    """A running proxy with its dashboard, the upstreams, and the parity statistics."""

    proxy: ProxyThread
    upstreams: dict[str, Upstream]
    parity_stats: MemoryStatsStore

    @property
    def url(self) -> str:
        return self.proxy.admin_url + "/dashboard/"


def sign_in(page: Any, env: DashboardEnv, token: str = TOKEN) -> None:
    page.goto(env.url)
    assert urlsplit(page.url).path == "/dashboard/login"
    page.get_by_label("Admin token", exact=True).fill(token)
    page.get_by_role("button", name="Sign in").click()
