"""Browser fixtures: Debian's Chromium driven by Playwright, real upstreams, a real proxy.

One browser per session, a fresh browser context (cookies) per test. Chromium comes from
the system (`/usr/bin/chromium`, or `$CHROMIUM_PATH`); `make browser-deps` installs it.
When it is missing the tests FAIL (not skip): `make test` is supposed to install it.
Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import (
    CHROMIUM_ARGS,
    SCREENSHOTS,
    DashboardEnv,
    FixedPlaybook,
    ParityBridge,
    ProxyThread,
    SawtoothLag,
    Upstream,
    chromium_path,
    running_upstreams,
    shop_config,
)

from parity.recording import MemoryStatsStore, PairSink
from strangler_proxy.bootstrap import bootstrap
from strangler_proxy.dashboard.adapters import StatsStoreParity


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One browser per module: sync Playwright keeps an event loop running until it closes,
    which would break later tests that call asyncio.run()."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the [test] extra installs it
        pytest.fail("playwright is not installed: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, timeout=30000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser_upstreams() -> Iterator[dict[str, Upstream]]:
    with running_upstreams("monolith", "catalog") as started:
        yield started


@pytest.fixture
def env(tmp_path: Path, browser_upstreams: dict[str, Upstream]) -> Iterator[DashboardEnv]:
    for upstream in browser_upstreams.values():
        upstream.control(reset=True)
    config = shop_config(tmp_path, browser_upstreams)
    stats = MemoryStatsStore()
    runtime = bootstrap(
        config,
        shadow_sink=ParityBridge(PairSink(stats)),
        parity=StatsStoreParity(stats),
        cdc=SawtoothLag(),
        playbook=FixedPlaybook(),
    )
    proxy = ProxyThread(runtime)
    try:
        yield DashboardEnv(proxy, browser_upstreams, stats)
    finally:
        proxy.stop()


@pytest.fixture
def page(browser: Any, env: DashboardEnv) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(8000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        yield page
    finally:
        context.close()
    # CSP violations and script errors show up here; 4xx answers a test provoked are expected.
    provoked = "Failed to load resource: the server responded with a status of 4"
    unexpected = [e for e in errors if not e.startswith(provoked)]
    assert not unexpected, f"browser reported errors: {unexpected}"


@pytest.fixture
def shoot() -> Callable[[Any, str], Path]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
