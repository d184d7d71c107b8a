"""Parity benchmark: comparator diffs/s on ~10 KB JSON bodies, and replay throughput against
two live HTTP backends as a ratio of the slower backend's own throughput in the same run.

    .venv/bin/python bench/parity_bench.py [--seconds 2] [--concurrency 8] [--requests 3000]
    .venv/bin/python bench/parity_bench.py --hostile-only   # big bodies: text diff, 20 MB JSON

The hostile part times one pass each (no servers): a text diff of HTML pages of 0.25, 1 and
4 MB made of repeated lines with one line changed (near-linear: the 4 MB page should cost
about 4x the 1 MB one), and a 20 MB JSON body with one difference compared, redacted and
rendered as the HTML report, beside the floor of parsing both bodies once (orjson).

The backends are the live monolith (control) and the extracted catalog service (candidate),
each served by one gunicorn process (gthread, keep-alive, as `kit up` runs them) on 127.0.0.1:
the monolith on a `kit seed` database, the service on a database loaded from it through
extracted/catalog/mapping.toml. One process each, so on a 2-core machine each backend has a
core of its own, as it would have a machine of its own. Every process started here is stopped
here, by pid; the databases live in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
from _procs import ROOT, stop_processes  # also puts ROOT on sys.path for tests.*

from kit.runtime.plan import gunicorn_argv
from kitcore.net import free_port, wait_http_ok
from parity.compare import Comparator, diff_text
from parity.model import Request, Response
from parity.recording import Redactor
from parity.report import RunReport, render_html
from parity.rules import RuleSet
from parity.runner import HttpBackend, Runner
from parity.sources import from_list


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


APPS = {
    "monolith": ("monolith.app:create_app()", "MONOLITH_DATABASE_URL"),
    "catalog": ("extracted.catalog.app:create_app()", "CATALOG_DATABASE_URL"),
}


def _prepare_databases(work: Path, scale: int) -> dict[str, str]:
    """A seeded monolith database and a catalog database loaded from it through the mapping."""
    from sqlalchemy import create_engine

    from tests.contract.harness import load_through_mapping, mapping_for, migrate

    urls = {name: f"sqlite:///{work / f'{name}.db'}" for name in APPS}
    kit = [sys.executable, "-c", "from kit.cli import main; main()"]
    subprocess.run(
        [*kit, "seed", "--scale", str(scale), "--url", urls["monolith"]],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    migrate("catalog", urls["catalog"])
    source, target = create_engine(urls["monolith"]), create_engine(urls["catalog"])
    try:
        load_through_mapping(source, target, mapping_for("catalog"))
    finally:
        source.dispose()
        target.dispose()
    return urls


def _start(app: str, database_url: str, threads: int) -> tuple[subprocess.Popen, str]:
    """One gunicorn process (gthread, keep-alive as `kit up` runs it) on a free port."""
    target, variable = APPS[app]
    port = free_port()
    bind = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        gunicorn_argv(sys.executable, target, bind, 1, threads, "--log-level", "warning"),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), variable: database_url},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(url + "/readyz", timeout_s=30)
    except TimeoutError:
        stop_processes(proc, timeout=10)
        raise
    return proc, url


def _backend_throughput(url: str, reqs: list[Request], concurrency: int) -> float:
    """Requests/s of one backend alone, driven by the same client and threads as the replay."""
    with HttpBackend(url, max_connections=concurrency * 2) as backend:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(backend.send, reqs))
        return len(reqs) / (time.perf_counter() - t0)


def _catalog_requests(n: int, products: int, categories: int) -> list[Request]:
    """A mix of the catalog's read endpoints over ids that exist in the seed data."""
    lines = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            lines.append(f"GET /products?per_page=20&page={1 + i % 5}")
        elif kind == 1:
            lines.append(f"GET /categories/{1 + i % categories}")
        elif kind == 2:
            lines.append("GET /categories")
        else:
            lines.append(f"GET /products/{1 + (i * 7919) % products}")
    return from_list(lines)


def _replay_rate(curl: str, durl: str, reqs: list[Request], concurrency: int) -> float:
    rules = RuleSet.from_dict({"defaults": {"ignore": ["$..request_id"]}})
    with (
        HttpBackend(curl, max_connections=concurrency * 2) as c,
        HttpBackend(durl, max_connections=concurrency * 2) as d,
    ):
        t0 = time.perf_counter()
        report = Runner(c, d, Comparator(rules), concurrency=concurrency).run(reqs)
        rate = len(reqs) / (time.perf_counter() - t0)
    if report.totals.matches != len(reqs):
        raise SystemExit(f"replay found differences: {report.totals}")
    return rate


def bench_replay(
    n_requests: int, concurrency: int, scale: int, threads: int, rounds: int
) -> list[dict[str, float]]:
    """Replay against the live monolith (control) and catalog service (candidate).

    Each round measures, in turn, each backend alone, both loaded at once (the replay's CPU
    contention without comparing), and the replay: interleaving the phases keeps warm-up
    and drift from favouring whichever phase runs last."""
    out = []
    with tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp:
        urls = _prepare_databases(Path(tmp), scale)
        control, curl = _start("monolith", urls["monolith"], threads)
        try:
            candidate, durl = _start("catalog", urls["catalog"], threads)
            try:
                with HttpBackend(curl) as probe:
                    products = probe.send(Request("GET", "/products")).json()["total"]
                    categories = probe.send(Request("GET", "/categories")).json()["total"]
                reqs = _catalog_requests(n_requests, products, categories)
                _replay_rate(curl, durl, reqs[:1000], concurrency)  # warm up both
                for _ in range(rounds):
                    ctl_rate = _backend_throughput(curl, reqs, concurrency)
                    cand_rate = _backend_throughput(durl, reqs, concurrency)
                    with ThreadPoolExecutor(2) as both:
                        f1 = both.submit(_backend_throughput, curl, reqs, concurrency)
                        f2 = both.submit(_backend_throughput, durl, reqs, concurrency)
                        together = min(f1.result(), f2.result())
                    replay_rate = _replay_rate(curl, durl, reqs, concurrency)
                    slower = min(ctl_rate, cand_rate)
                    out.append(
                        {
                            "monolith alone req/s": ctl_rate,
                            "catalog service alone req/s": cand_rate,
                            "slower backend, both loaded at once": together,
                            "replay pairs/s": replay_rate,
                            "ratio to slower backend (alone)": replay_rate / slower,
                            "ratio to slower backend (both loaded)": replay_rate / together,
                        }
                    )
            finally:
                stop_processes(candidate, timeout=10)
        finally:
            stop_processes(control, timeout=10)
    return out


def _html_page(megabytes: float, changes: int) -> tuple[str, str]:
    """An HTML table of repeated cells (the input that made difflib quadratic) and a copy
    with `changes` rows changed, spread evenly."""
    rows, size = [], 0
    while size < megabytes * 1_000_000:
        row = f"<tr><td>{len(rows) % 17}</td><td>item</td><td>{len(rows) % 5}</td></tr>"
        rows.append(row)
        size += len(row) + 1
    changed = list(rows)
    for c in range(changes):
        changed[(c + 1) * len(rows) // (changes + 1)] = f"<tr><td>changed {c}</td></tr>"
    return "\n".join(rows), "\n".join(changed)


def _timed(fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_hostile() -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for changes in (1, 10):
        for mb in (0.25, 1.0, 4.0):
            a, b = _html_page(mb, changes)
            seconds, diffs = _timed(lambda a=a, b=b: diff_text(a, b))
            assert len(diffs) == changes, diffs  # type: ignore[arg-type]
            out.append((f"text diff, {mb:g} MB HTML page, {changes} line(s) changed (s)", seconds))
    per_item = len(_body(1000)) / 1000
    big = _body(int(20_000_000 / per_item) + 1)
    a = big
    b = big.replace(b'"Product 12345"', b'"Product 12345 (changed)"', 1)
    assert a != b
    ctype = {"Content-Type": "application/json"}
    parse_floor, _ = _timed(lambda: (orjson.loads(a), orjson.loads(b)))
    out.append((f"parse both {len(a) / 1e6:.1f} MB bodies once, orjson (floor, s)", parse_floor))

    def compare_and_report() -> str:
        result = Comparator().compare(
            Request("GET", "/big"), Response(200, ctype, a), Response(200, ctype, b)
        )
        assert len(result.differences) == 1, result.differences
        safe = Redactor().result(result)
        return render_html(RunReport("control", "candidate", results=[safe]))

    cpu0 = time.process_time()
    seconds, page = _timed(compare_and_report)
    cpu = time.process_time() - cpu0
    out.append(("compare + redact + HTML report of that pair (s)", seconds))
    out.append(("  ... CPU time of this process (s; wall above includes waiting)", cpu))
    out.append(("  ... as a multiple of the parse floor", seconds / parse_floor))
    out.append(("  ... HTML page size (KB)", len(page) / 1000))  # type: ignore[arg-type]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per comparator case")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--scale", type=int, default=1, help="kit seed scale of the monolith")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per backend")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved replay rounds")
    parser.add_argument("--skip-replay", action="store_true")
    parser.add_argument("--skip-comparator", action="store_true")
    parser.add_argument("--skip-hostile", action="store_true")
    parser.add_argument("--hostile-only", action="store_true", help="only the big-body timings")
    args = parser.parse_args()
    if args.hostile_only:
        args.skip_comparator = args.skip_replay = True
    if not args.skip_hostile:
        print("hostile inputs (one pass each):")
        for label, value in bench_hostile():
            print(f"  {label:<60} {value:>10,.2f}")
    if not args.skip_comparator:
        print("comparator alone (diffs/s):")
        for label, rate in bench_comparator(args.seconds):
            print(f"  {label:<36} {rate:>10,.0f}")
    if not args.skip_replay:
        print(
            f"replay, monolith vs catalog service under gunicorn ({args.requests} requests,"
            f" concurrency {args.concurrency}):"
        )
        rounds = bench_replay(
            args.requests, args.concurrency, args.scale, args.threads, args.rounds
        )
        print(f"  {'':<40}" + "".join(f"{f'round {i + 1}':>10}" for i in range(len(rounds))))
        for label in rounds[0]:
            print(f"  {label:<40}" + "".join(f"{r[label]:>10,.2f}" for r in rounds))
        ratios = sorted(r["ratio to slower backend (alone)"] for r in rounds)
        print(f"  median replay / slower backend alone: {ratios[len(ratios) // 2]:.2f}")


if __name__ == "__main__":
    main()
