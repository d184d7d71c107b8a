"""The monolith and both extracted services run side by side under gunicorn (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kitcore.net import free_port, wait_http_ok
from tests.contract.harness import ROOT, migrate

pytestmark = pytest.mark.integration

APPS = {
    "monolith": ("monolith.app:create_app()", "MONOLITH_DATABASE_URL", "/products"),
    "catalog": ("extracted.catalog.app:create_app()", "CATALOG_DATABASE_URL", "/categories"),
    "customers": ("extracted.customers.app:create_app()", "CUSTOMERS_DATABASE_URL", "/customers"),
}


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def running(tmp_path: Path) -> Iterator[dict[str, int]]:
    """Each app under gunicorn (1 worker) on its own free port; stopped by pid afterwards."""
    processes: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    try:
        for name, (target, variable, _path) in APPS.items():
            url = f"sqlite:///{tmp_path / f'{name}.db'}"
            migrate(name, url)
            port = free_port()
            log = open(tmp_path / f"{name}.log", "wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gunicorn", "--workers", "1",
                     "--bind", f"127.0.0.1:{port}", target],
                    cwd=ROOT,
                    env={**os.environ, variable: url},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
            log.close()
            ports[name] = port
        for port in ports.values():
            wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout_s=30)
        yield ports
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def test_monolith_and_services_serve_side_by_side(running: dict[str, int]) -> None:
    for name, port in running.items():
        base = f"http://127.0.0.1:{port}"
        assert _get(f"{base}/healthz") == (200, {"status": "ok"}), name
        status, ready = _get(f"{base}/readyz")
        assert (status, ready["status"], ready["checks"]["database"]) == (200, "ready", "ok"), name
        if name != "monolith":  # the services also check their schema is at its Alembic head
            assert ready["checks"]["schema"] == "ok", name
        status, body = _get(f"{base}{APPS[name][2]}")
        assert status == 200, (name, body)
        assert body["items"] == [] and body["total"] == 0
    # the services own only their endpoints
    status, body = _get(f"http://127.0.0.1:{running['catalog']}/customers")
    assert status == 404 and body["error"]["code"] == "not_found"
