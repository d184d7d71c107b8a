"""Parity benchmark: comparator diffs/s on ~10 KB JSON bodies, and replay throughput against
two live HTTP backends as a ratio of the slower backend's own throughput in the same run.

    .venv/bin/python bench/parity_bench.py [--seconds 3] [--concurrency 4] [--requests 400]

Backends are the shop-like test app (tests/unit/parity/parity_testapps.py) served by gunicorn
in separate processes on 127.0.0.1; every process started here is stopped here, by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parity.compare import Comparator  # noqa: E402
from parity.model import Request, Response  # noqa: E402
from parity.rules import RuleSet  # noqa: E402
from parity.runner import HttpBackend, Runner  # noqa: E402
from parity.sources import from_list  # noqa: E402
from shoplib.testing import free_port  # noqa: E402

APPS_DIR = ROOT / "tests" / "unit" / "parity"


def _body(n_items: int, change: int = 0) -> bytes:
    items = [
        {
            "id": i,
            "sku": f"SKU-{i:06d}",
            "name": f"Product {i}",
            "price": {"cents": 1000 + i, "currency": "EUR"},
            "active": True,
            "tags": ["a", "b"],
            "description": None,
        }
        for i in range(n_items)
    ]
    for k in range(change):
        items[(k * 7) % n_items]["price"]["cents"] += 1
    return json.dumps({"items": items, "page": 1, "per_page": n_items, "total": n_items}).encode()


def bench_comparator(seconds: float) -> list[tuple[str, float]]:
    a = _body(70)
    cases = {
        "identical bytes": (a, a, None),
        "equal, re-serialised": (a, json.dumps(json.loads(a), indent=1).encode(), None),
        "1 difference": (a, _body(70, 1), None),
        "10 differences": (a, _body(70, 10), None),
        "1 difference + 3 rules": (
            a,
            _body(70, 1),
            RuleSet.from_dict(
                {
                    "defaults": {
                        "ignore": ["$..request_id", "$.items[*].updated_at"],
                        "unordered": [{"path": "$.items[*].tags"}],
                    }
                }
            ),
        ),
    }
    out = []
    req = Request("GET", "/products")
    headers = {"Content-Type": "application/json"}
    for label, (x, y, rules) in cases.items():
        cmp = Comparator(rules)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(50):
                cmp.compare(req, Response(200, headers, x), Response(200, headers, y))
            n += 50
        out.append((f"{label} ({len(x) // 1024} KB)", n / (time.perf_counter() - t0)))
    return out


def _start(variant: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    factory = f"create_shop_app({variant!r})" if variant else "create_shop_app()"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "1",
            "--threads",
            "8",
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(APPS_DIR),
            "--log-level",
            "warning",
            f"parity_testapps:{factory}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if httpx.get(url + "/products/1", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"backend on {url} did not start")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _backend_throughput(url: str, reqs: list[Request], concurrency: int) -> float:
    with HttpBackend(url, max_connections=concurrency * 2) as backend:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(backend.send, reqs))
        return len(reqs) / (time.perf_counter() - t0)


def bench_replay(n_requests: int, concurrency: int) -> dict[str, float]:
    control, curl = _start(None)
    try:
        candidate, durl = _start(None)
        try:
            lines = [
                "GET /products?per_page=50",
                "GET /products/3",
                "GET /products?page=2&per_page=10",
            ]
            reqs = from_list((lines * (n_requests // len(lines) + 1))[:n_requests])
            # warm up both
            _backend_throughput(curl, reqs[:50], concurrency)
            _backend_throughput(durl, reqs[:50], concurrency)
            ctl_rate = _backend_throughput(curl, reqs, concurrency)
            cand_rate = _backend_throughput(durl, reqs, concurrency)
            # both loaded at once: the same CPU contention as during the replay
            with ThreadPoolExecutor(2) as both:
                f1 = both.submit(_backend_throughput, curl, reqs, concurrency)
                f2 = both.submit(_backend_throughput, durl, reqs, concurrency)
                together = min(f1.result(), f2.result())
            with (
                HttpBackend(curl, max_connections=concurrency * 2) as c,
                HttpBackend(durl, max_connections=concurrency * 2) as d,
            ):
                t0 = time.perf_counter()
                report = Runner(c, d, concurrency=concurrency).run(reqs)
                replay_rate = len(reqs) / (time.perf_counter() - t0)
            assert report.totals.matches == len(reqs), report.totals
        finally:
            _stop(candidate)
    finally:
        _stop(control)
    slower = min(ctl_rate, cand_rate)
    return {
        "control req/s": ctl_rate,
        "candidate req/s": cand_rate,
        "replay pairs/s": replay_rate,
        "slower backend, both loaded at once": together,
        "ratio to slower backend (alone)": replay_rate / slower,
        "ratio to slower backend (both loaded)": replay_rate / together,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per comparator case")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skip-replay", action="store_true")
    args = parser.parse_args()
    print("comparator alone (diffs/s):")
    for label, rate in bench_comparator(args.seconds):
        print(f"  {label:<36} {rate:>10,.0f}")
    if not args.skip_replay:
        print(
            f"replay against live gunicorn backends ({args.requests} requests, concurrency {args.concurrency}):"
        )
        for label, value in bench_replay(args.requests, args.concurrency).items():
            print(f"  {label:<40} {value:>10,.2f}")


if __name__ == "__main__":
    main()
