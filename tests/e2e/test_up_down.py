"""`kit up` / `kit down` as a user runs them: real processes, health-checked, idempotent, and
nothing left behind (not even a gunicorn worker)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kit.manifest import load_manifest
from kit.runtime.plan import proxy_url, run_dir
from kit.runtime.procs import RunDir, proc_start_ticks

pytestmark = pytest.mark.e2e


def kit(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kit.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def group_members(pgids: set[int]) -> set[int]:
    """Every live pid whose process group is one of `pgids` (gunicorn workers included)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) in pgids and proc_start_ticks(int(entry.name)):
                    found.add(int(entry.name))
            except ProcessLookupError:
                continue
    return found


def test_kit_up_starts_everything_once_and_kit_down_leaves_nothing(
    demo_manifest: Path, demo_rundir: RunDir
) -> None:
    m = load_manifest(demo_manifest)
    assert run_dir(m).run_dir == demo_rundir.run_dir
    cwd = demo_manifest.parent

    up = kit("up", "--manifest", str(demo_manifest), cwd=cwd)
    assert up.returncode == 0, up.stdout + up.stderr
    records = {r.name: r for r in demo_rundir.records()}
    assert {"monolith", "catalog", "customers", "proxy", "watchdog"} <= set(records)
    for name in ("monolith", "catalog", "customers", "proxy", "watchdog"):
        assert (demo_rundir.log_dir / f"{name}.log").exists()
    members = group_members({r.pid for r in records.values()})
    assert len(members) >= len(records) + 3  # gunicorn workers in the groups too

    with httpx.Client(base_url=proxy_url(m), timeout=10) as client:
        response = client.get("/readyz")
        assert response.status_code == 200
    for service in ("catalog", "customers"):
        url = m.services[service].url
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200  # kit up's check
        not_yet = httpx.get(url + "/readyz", timeout=5)  # no `schema` step ran: not at head
        assert not_yet.status_code == 503, not_yet.text
        assert "not migrated" in not_yet.json()["checks"]["schema"]

    again = kit("up", "--manifest", str(demo_manifest), cwd=cwd)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 started" in again.stdout
    assert {r.name: r.pid for r in demo_rundir.records()} == {n: r.pid for n, r in records.items()}

    status = kit("up", "--manifest", str(demo_manifest), "--status", cwd=cwd)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "ready" in status.stdout

    down = kit("down", "--manifest", str(demo_manifest), cwd=cwd)
    assert down.returncode == 0, down.stdout + down.stderr
    assert demo_rundir.records() == []
    assert group_members({r.pid for r in records.values()}) == set()

    nothing = kit("down", "--manifest", str(demo_manifest), cwd=cwd)
    assert nothing.returncode == 0 and "nothing was running" in nothing.stdout


def test_kit_up_reports_a_port_already_taken_and_down_cleans_up(
    demo_manifest: Path, demo_rundir: RunDir
) -> None:
    m = load_manifest(demo_manifest)
    import socket

    host, port = m.services["catalog"].url.rsplit(":", 1)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", int(port)))
    blocker.listen(1)
    try:
        up = kit("up", "--manifest", str(demo_manifest), cwd=demo_manifest.parent)
        assert up.returncode != 0
        assert "catalog" in up.stderr and "kit down" in up.stderr
    finally:
        blocker.close()
    down = kit("down", "--manifest", str(demo_manifest), cwd=demo_manifest.parent)
    assert down.returncode == 0
    assert demo_rundir.records() == []
