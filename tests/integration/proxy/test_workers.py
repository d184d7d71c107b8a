"""Several proxy worker processes behind one port: routes, stats, shadow, drain, restarts."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from proxy_helpers import (
    TOKEN,
    ProxyThread,
    Upstream,
    admin_client,
    shop_config,
    wait_for,
)

from tests.fixtures.process import start_proxy_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _stats(admin: httpx.Client) -> dict:
    return admin.get("/admin/stats").json()


def _fresh_get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """One request on a new connection (new connections are spread across workers)."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.get(url, headers=headers)


@pytest.fixture
def multi_proxy(
    tmp_path: Path,
    fresh_upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> ProxyThread:
    return proxy_factory(shop_config(tmp_path, fresh_upstreams, workers=2))


@pytest.fixture
def multi_admin(multi_proxy: ProxyThread) -> Iterator[httpx.Client]:
    with admin_client(multi_proxy) as client:
        yield client


def test_two_workers_serve_the_port_and_report_themselves(
    multi_proxy: ProxyThread, multi_admin: httpx.Client
) -> None:
    workers = _stats(multi_admin)["workers"]
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(w["ready"] for w in workers)
    for _ in range(20):
        response = _fresh_get(f"{multi_proxy.url}/anything")
        assert response.status_code == 200
        assert response.headers["x-served-by"] == "monolith"


def test_a_route_change_reaches_every_worker_within_a_second(
    multi_proxy: ProxyThread, multi_admin: httpx.Client
) -> None:
    response = multi_admin.put(
        "/admin/routes",
        json={"method": "GET", "path": "/products/<int:id>", "mode": "extracted"},
    )
    assert response.status_code == 200, response.text
    version = response.json()["version"]
    changed = time.monotonic()
    wait_for(lambda: all(w["route_version"] == version for w in _stats(multi_admin)["workers"]))
    # The workers reload on a signal; reports arrive every 0.2 s: well inside one second
    # even on a loaded machine, but only asserted loosely here (no timing assertions).
    assert time.monotonic() - changed < 5
    for _ in range(20):
        assert _fresh_get(f"{multi_proxy.url}/products/1").headers["x-served-by"] == "catalog"


def test_stats_aggregate_requests_from_every_worker(
    multi_proxy: ProxyThread, multi_admin: httpx.Client
) -> None:
    for i in range(30):
        assert _fresh_get(f"{multi_proxy.url}/agg/{i}").status_code == 200

    def total() -> int:
        rows = _stats(multi_admin)["series"]
        return sum(r["requests"] for r in rows if r["route"] == "<default>")

    wait_for(lambda: total() == 30)
    metrics = multi_admin.get("/metrics").text
    assert 'strangler_proxy_requests_total{route="<default>",target="monolith"} 30' in metrics


def test_shadow_pairs_from_workers_reach_the_supervisor(
    multi_proxy: ProxyThread, multi_admin: httpx.Client
) -> None:
    response = multi_admin.put(
        "/admin/routes", json={"method": "GET", "path": "/products", "mode": "shadow"}
    )
    assert response.status_code == 200
    version = response.json()["version"]
    wait_for(lambda: all(w["route_version"] == version for w in _stats(multi_admin)["workers"]))
    for _ in range(6):
        assert _fresh_get(f"{multi_proxy.url}/products").headers["x-served-by"] == "monolith"
    wait_for(lambda: multi_admin.get("/admin/shadow").json()["total"] == 6)
    pair = multi_admin.get("/admin/shadow?limit=1").json()["pairs"][0]
    assert pair["service_response"]["status"] == 200
    wait_for(lambda: _stats(multi_admin)["counters"]["shadow_sent"] == 6)


def test_a_worker_killed_with_sigkill_is_replaced(
    multi_proxy: ProxyThread, multi_admin: httpx.Client
) -> None:
    before = _stats(multi_admin)["workers"]
    victim = before[0]["pid"]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        workers = _stats(multi_admin)["workers"]
        return all(w["ready"] for w in workers) and victim not in {w["pid"] for w in workers}

    wait_for(replaced, timeout=30)
    assert _stats(multi_admin)["workers"][0]["restarts"] == 1
    for _ in range(10):
        assert _fresh_get(f"{multi_proxy.url}/after-kill").status_code == 200


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_sigterm_drains_in_flight_requests_in_every_worker(
    tmp_path: Path, fresh_upstreams: dict[str, Upstream]
) -> None:
    monolith = fresh_upstreams["monolith"]
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"""
listen_port = 0
admin_port = 0
admin_token = "{TOKEN}"
store_url = "sqlite:///{tmp_path / "routes.db"}"
workers = 2
shutdown_timeout = 10.0
[upstreams]
monolith = "{monolith.url}"
[shadow]
jsonl_path = "{tmp_path / "shadow.jsonl"}"
"""
    )
    proc = start_proxy_cli(config, stderr=subprocess.DEVNULL, cwd=ROOT)
    workers: list[int] = []
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], 60)[0], "proxy did not start"
        info = json.loads(proc.stdout.readline())
        workers = _children(proc.pid)
        assert len(workers) == 2
        monolith.control(hold=True)
        results: list[int] = []

        def call(i: int) -> None:
            results.append(_fresh_get(f"{info['proxy']}/slow/{i}").status_code)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        wait_for(lambda: monolith.seen()["held"] == 8)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the workers are draining now; release the held requests
        monolith.control(hold=False)
        for thread in threads:
            thread.join(15)
        assert results == [200] * 8
        assert proc.wait(timeout=20) == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    finally:
        monolith.control(hold=False)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
