"""Durability: a `kit step` killed with SIGKILL mid-step leaves a state `kit status` explains,
and `kit step` / `kit rollback` continue from it. Proxy wiring: the proxy built from the
manifest records shadow pairs into the parity statistics and refuses guarded changes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from kit.playbook import Playbook
from kit.playbook import pipelines as pl
from tests.playbook_shop import ROOT, Shop, make_shop

pytestmark = pytest.mark.integration
UNSERVED = pytest.mark.parametrize("shop", [{"serve": False}], indirect=True)


def kit(shop: Shop, *args: str, **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "kit.cli", "--manifest", str(shop.manifest_path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def _kill_mid_step(shop: Shop, step: str) -> int:
    env = {**os.environ, "KIT_FAULT_PAUSE": f"{step}:60"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kit.cli",
            "--manifest",
            str(shop.manifest_path),
            "step",
            "catalog",
            step,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until the step is half done
            if "fault injection" in line:
                break
        else:
            pytest.fail("the step never reached its fault point")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.pid


@UNSERVED
def test_a_step_killed_mid_way_is_explained_and_can_be_completed(shop: Shop) -> None:
    assert kit(shop, "step", "catalog", "schema").returncode == 0
    pid = _kill_mid_step(shop, "capture")
    status = kit(shop, "status")
    assert status.returncode == 0, status.stderr
    assert "interrupted" in status.stdout
    assert f"process {pid} is gone" in status.stdout
    assert "kit step catalog capture" in status.stdout
    plan = kit(shop, "plan", "catalog")
    assert "capture  running" in plan.stdout and "interrupted" in plan.stdout
    # another step is refused while capture is half done
    refused = kit(shop, "step", "catalog", "verify")
    assert refused.returncode == 2 and "step out of order" in refused.stderr
    # re-running the step completes it (idempotent): snapshot resumed, rows streamed
    done = kit(shop, "step", "catalog", "capture")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "snapshot resumed" in done.stdout
    pb = Playbook(shop.manifest)
    try:
        assert pb.state.get("catalog").status == "done"
        assert pb.step("catalog", "verify").ok
    finally:
        pb.close()


@UNSERVED
def test_a_step_killed_mid_way_can_be_rolled_back(shop: Shop) -> None:
    assert kit(shop, "step", "catalog", "schema").returncode == 0
    _kill_mid_step(shop, "capture")
    back = kit(shop, "rollback", "catalog")
    assert back.returncode == 0, back.stdout + back.stderr
    pb = Playbook(shop.manifest)
    try:
        st = pb.state.get("catalog")
        assert (st.step, st.status) == ("schema", "done")
        assert not any(
            pl.capture_enabled(shop.manifest.monolith.database_url, ["products"]).values()
        )
        assert [h.action for h in pb.state.history("catalog", 3)] == ["rollback", "run", "run"]
    finally:
        pb.close()


class _ProxyThread:
    """The manifest-built proxy on its own event loop in a thread (stopped by the test)."""

    def __init__(self, runtime) -> None:  # type: ignore[no-untyped-def]
        self.runtime = runtime
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.runtime.start())
        self.started.set()
        self.loop.run_forever()

    def __enter__(self) -> _ProxyThread:
        self.thread.start()
        assert self.started.wait(20)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runtime.stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_the_manifest_proxy_feeds_parity_statistics_and_refuses_guarded_changes(
    tmp_path: Path,
) -> None:
    from kit.playbook.proxy import build_proxy

    shop = make_shop(tmp_path, min_samples=2)
    pb = Playbook(shop.manifest)
    try:
        for _ in range(4):  # schema, capture, verify, shadow
            assert pb.advance("catalog").ok
        runtime = build_proxy(shop.manifest, listen_port=0, admin_port=0)
        with _ProxyThread(runtime) as proxy:
            base = runtime.proxy_url
            for _ in range(3):
                for path in ("/categories", "/categories/1", "/products", "/products/1"):
                    assert httpx.get(base + path).status_code == 200
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                runtime.parity_sink.flush(1)
                if pb.stats().stats_for("GET /products/<int:id>").requests >= 3:
                    break
                time.sleep(0.1)
            stats = pb.stats().stats_for("GET /products/<int:id>")
            assert stats.requests >= 3 and stats.mismatches == 0, stats
            # the admin API refuses what the playbook refuses (write before `writes`)
            admin = httpx.Client(
                base_url=runtime.admin_url,
                headers={"Authorization": f"Bearer {runtime.admin_token}"},
            )
            r = admin.put(
                "/admin/routes",
                json={
                    "method": "POST",
                    "path": "/products",
                    "mode": "extracted",
                    "service": "catalog",
                },
            )
            assert r.status_code == 409
            assert "forward CDC still owns" in r.json()["error"]["message"]
            admin.close()
            assert proxy.thread.is_alive()
        assert pb.advance("catalog").ok  # canary: the live shadow samples satisfy the gate
    finally:
        pb.close()
        shop.close()
