"""Proxy overhead benchmark: direct vs strangler_proxy vs nginx, in the same run, as ratios.

    .venv/bin/python bench/proxy_bench.py [--duration 5] [--rounds 5] [--connections 32]
                                          [--workers 1,2] [--variants fast] [--skip-monolith]
                                          [--skip-static] [--no-reuse-port]
                                          [--split-cores 0:1]

Two upstreams, each measured directly, through nginx configured as an equivalent reverse
proxy, through a blind byte relay (`blind_relay.py`: the cheapest possible Python hop, no
parsing at all, the floor any Python proxy pays), and through strangler_proxy (one run per
`--workers` count and `--variants` entry: `fast` = lean hot path, `aiohttp` = fast_path off;
add `asyncio` to force the stock loop):

* a trivial static answer served by nginx (the cheapest upstream: proxy cost dominates);
  target: proxy >= 0.5 x nginx's throughput;
* the gunicorn-served monolith (`kit up`'s gunicorn command line: 2 gthread workers x 4
  threads, keep-alive, on a seeded SQLite database, plus `--reuse-port`, see below) on cheap
  endpoints (GET /healthz, GET /products/1); targets: proxy >= 0.9 x direct throughput, added
  latency <= 0.5 ms p50 and <= 2 ms p99.

Every target is measured in `--rounds` interleaved rounds (direct, nginx, relay, each proxy,
then again); the figure is each target's median round (req/s, and p50/p99 of that round), and
the best round is listed beside it. `--reuse-port` gives each gunicorn worker its own listening
socket, so the kernel spreads connections over the workers: without it the workers race for
every accept, and in some rounds all of wrk's 32 connections land on one worker, which halves
direct throughput (`--no-reuse-port` shows it: the CPU share of each gunicorn worker is listed
per round, e.g. `2037 [0/104]`). Every round's req/s is listed, and the CPU used by processes
outside the bench during the median round ("others").

Peak RSS (VmHWM) of every proxy process (supervisor + workers) is reported, with their total,
and the total PSS (shared library pages counted once across the processes, i.e. what the
proxy costs the machine); target <= 150 MB for the whole proxy.
Needs `wrk` and `nginx` (Debian packages; installed with apt-get when missing and root).
Not a test: no assertions, figures only (copy them into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _procs import (
    ROOT,
    free_port,
    peak_rss_mb,
    process_tree,
    pss_mb,
    start_proxy_cli,
    wait_port,
)
from _procs import stop_processes as stop

from kit.runtime.plan import gunicorn_argv


def ensure_tools() -> None:
    missing = [
        tool
        for tool in ("wrk", "nginx")
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing {', '.join(missing)}: apt-get install -y wrk nginx")
    print(f"installing {' '.join(missing)} ...", file=sys.stderr)
    subprocess.run(
        ["apt-get", "install", "-y", "wrk", "nginx"], check=True, stdout=subprocess.DEVNULL
    )


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    keepalive_requests 100000;
    upstream backend {{ server {upstream_host}:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{static_port};
        location / {{ default_type application/json; return 200 '{{"ok":true}}'; }}
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_buffering off;
        }}
    }}
}}
"""


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def system_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / TICK


#: CPU sets for `--split-cores`: the upstream on one side, wrk and the proxies on the other.
CPUS: dict[str, set[int] | None] = {"upstream": None, "front": None}


def pinned(role: str) -> Any:
    """A preexec_fn pinning a child (and what it forks) to the role's CPUs, or None."""
    cpus = CPUS[role]
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def run_wrk(url: str, duration: int, connections: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
        preexec_fn=pinned("front"),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def first_line(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The first line a started server prints (it does once it listens); stops it if none
    comes within `timeout` seconds."""
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], timeout)[0]:
        stop(proc)
        raise RuntimeError(f"{what} did not start")
    return proc.stdout.readline()


class Relay:
    """`blind_relay.py` in front of one upstream (see the module docstring)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "blind_relay.py"), str(port), upstream_host,
             str(upstream_port)],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=pinned("front"),
        )  # fmt: skip
        first_line(self.proc, 30, "blind relay")  # `ready`
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        stop(self.proc)


class Proxy:
    """`kit proxy run` in front of one upstream, with a given worker count and variant."""

    def __init__(self, work: Path, upstream: str, workers: int, variant: str) -> None:
        name = f"proxy-{workers}-{variant}"
        config = work / f"{name}.toml"
        config.write_text(f"""
listen_port = 0
admin_port = 0
workers = {workers}
fast_path = {"false" if variant == "aiohttp" else "true"}
event_loop = "{"asyncio" if "asyncio" in variant else "auto"}"
admin_token_file = "{work / "token"}"
store_url = "sqlite:///{work / name}.db"
[upstreams]
monolith = "{upstream}"
[shadow]
jsonl_path = "{work / "shadow.jsonl"}"
""")
        self.proc = start_proxy_cli(config, cwd=ROOT, preexec_fn=pinned("front"))
        self.url = json.loads(first_line(self.proc, 60, "proxy"))["proxy"]

    def rss(self) -> list[float]:
        return [peak_rss_mb(pid) for pid in process_tree(self.proc.pid)]

    def pss(self) -> float:
        return sum(pss_mb(pid) for pid in process_tree(self.proc.pid))

    def close(self) -> None:
        stop(self.proc)


def start_nginx(
    work: Path, tag: str, upstream_host: str, upstream_port: int
) -> tuple[subprocess.Popen[str], int, int]:
    static_port, proxy_port = free_port(), free_port()
    conf_dir = work / re.sub(r"[^A-Za-z0-9_.-]+", "-", tag)
    conf_dir.mkdir()
    (conf_dir / "nginx.conf").write_text(
        NGINX_CONF.format(
            work=conf_dir,
            static_port=static_port,
            proxy_port=proxy_port,
            upstream_host=upstream_host,
            upstream_port=upstream_port or static_port,
        )
    )
    proc = subprocess.Popen(
        [nginx_binary(), "-c", str(conf_dir / "nginx.conf"), "-p", str(conf_dir)],
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=pinned("front"),
    )
    wait_port(static_port)
    wait_port(proxy_port)
    return proc, static_port, proxy_port


def gunicorn_command(flavour: str, port: int, args: argparse.Namespace) -> list[str]:
    """`gthread`: `kit up`'s command line (keep-alive, so a proxy's pooled connections are
    reused; a listening socket per worker); `sync`: gunicorn's default (one request per
    connection, closes after each answer), also with `--reuse-port`. `--no-reuse-port` takes
    it out of both, to show the shared socket's accept race (see the module docstring)."""
    bind, app = f"127.0.0.1:{port}", "monolith.app:create_app()"
    if flavour == "gthread":
        workers, threads = args.gunicorn_workers, args.gunicorn_threads
        command = list(gunicorn_argv(sys.executable, app, bind, workers, threads))
    elif flavour == "sync":
        workers = str(args.gunicorn_workers)
        command = [sys.executable, "-m", "gunicorn", "-w", workers, "--reuse-port", "-b", bind, app]
    else:
        raise SystemExit(f"unknown gunicorn flavour {flavour!r} (sync, gthread)")
    if not args.reuse_port:
        command.remove("--reuse-port")
    return [*command[:-1], "--log-level", "warning", command[-1]]


def start_monolith(
    work: Path, flavour: str, args: argparse.Namespace
) -> tuple[subprocess.Popen[str], int]:
    db = work / "monolith.db"
    url = f"sqlite:///{db}"
    kit = [sys.executable, "-c", "from kit.cli import main; main()"]
    quiet = {"cwd": ROOT, "check": True, "stdout": subprocess.DEVNULL}
    if not db.exists():
        subprocess.run([*kit, "db", "upgrade", "monolith", "--url", url], **quiet)
        subprocess.run([*kit, "seed", "--url", url], **quiet)
    port = free_port()
    proc = subprocess.Popen(
        gunicorn_command(flavour, port, args),
        cwd=ROOT,
        env={**os.environ, "MONOLITH_DATABASE_URL": url},
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=pinned("upstream"),
    )
    wait_port(port)
    return proc, port


class Meter:
    """CPU accounting around one wrk run: the bench's own processes vs everything else."""

    def __init__(self, trees: list[int], workers: list[int]) -> None:
        self.trees = trees  # root pids whose whole process tree belongs to the bench
        self.workers = workers  # upstream worker pids whose CPU split is shown

    def pids(self) -> list[int]:
        return [pid for root in self.trees for pid in process_tree(root)]

    def run(self, url: str, args: argparse.Namespace) -> dict[str, Any]:
        run_wrk(url, 1, args.connections, args.threads)  # warm-up
        pids = self.pids()
        ours0 = cpu_seconds(pids)
        workers0 = [cpu_seconds([pid]) for pid in self.workers]
        wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0, started = system_busy_seconds(), time.monotonic()
        result: dict[str, Any] = run_wrk(url, args.duration, args.connections, args.threads)
        wall = time.monotonic() - started
        busy = system_busy_seconds() - busy0
        wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk = wrk1.ru_utime + wrk1.ru_stime - wrk0.ru_utime - wrk0.ru_stime
        ours = cpu_seconds(pids) - ours0 + wrk
        result["others_pct"] = max(0.0, busy - ours) / wall * 100
        result["split"] = [
            (cpu_seconds([pid]) - before) / wall * 100
            for pid, before in zip(self.workers, workers0, strict=True)
        ]
        return result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median req/s (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["rps"])[(len(runs) - 1) // 2]


def latency(url: str, args: argparse.Namespace) -> dict[str, float]:
    run_wrk(url, 1, 1, 1)  # warm-up
    return run_wrk(url, args.latency_duration, 1, 1)


def scenario(
    title: str,
    work: Path,
    upstream_host: str,
    upstream_port: int,
    paths: list[str],
    args: argparse.Namespace,
    upstream_proc: subprocess.Popen[str] | None = None,
) -> list[str]:
    """Measure direct / nginx / every proxy variant on each path; returns report lines."""
    nginx, static_port, nginx_port = start_nginx(work, title, upstream_host, upstream_port)
    upstream_port = upstream_port or static_port
    lines = [f"== {title} (upstream 127.0.0.1:{upstream_port}) =="]
    proxies: dict[str, Proxy] = {}
    relay = Relay(upstream_host, upstream_port)
    try:
        for workers in args.workers:
            for variant in args.variants:
                proxies[f"proxy w={workers} {variant}"] = Proxy(
                    work, f"http://{upstream_host}:{upstream_port}", workers, variant
                )
        upstream_root = upstream_proc.pid if upstream_proc is not None else nginx.pid
        gunicorn_workers = process_tree(upstream_proc.pid)[1:] if upstream_proc else []
        roots = {upstream_root, nginx.pid, relay.proc.pid, *(p.proc.pid for p in proxies.values())}
        meter = Meter(sorted(roots), gunicorn_workers)
        for path in paths:
            urls = {"direct": f"http://{upstream_host}:{upstream_port}{path}"}
            urls["nginx"] = f"http://127.0.0.1:{nginx_port}{path}"
            urls["blind relay (floor)"] = relay.url + path
            for label, proxy in proxies.items():
                urls[label] = proxy.url + path
            rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in urls}
            for _ in range(args.rounds):  # interleaved: every target sees the same noise
                for label, url in urls.items():
                    rounds[label].append(meter.run(url, args))
            results = {label: median_run(runs) for label, runs in rounds.items()}
            best = {label: max(run["rps"] for run in runs) for label, runs in rounds.items()}
            direct, ngx = results["direct"], results["nginx"]
            lines.append(f"GET {path}  (median of {args.rounds} interleaved rounds; best beside)")
            lines.append(
                f"  {'target':<26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non2xx':>8}"
                f"{'/direct':>9}{'/nginx':>8}{'+p50 ms':>9}{'+p99 ms':>9}{'others%':>9}"
                f"{'best':>8}{'/direct':>9}  rounds: req/s [upstream worker CPU %]"
            )
            for label, r in results.items():
                each = "  ".join(
                    f"{run['rps']:.0f}"
                    + (f" [{'/'.join(f'{c:.0f}' for c in run['split'])}]" if run["split"] else "")
                    for run in rounds[label]
                )
                lines.append(
                    f"  {label:<26}{r['rps']:>9.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
                    f"{r['non_2xx']:>8.0f}{r['rps'] / direct['rps']:>9.3f}"
                    f"{r['rps'] / ngx['rps']:>8.3f}{r['p50_ms'] - direct['p50_ms']:>+9.3f}"
                    f"{r['p99_ms'] - direct['p99_ms']:>+9.3f}{r['others_pct']:>9.0f}"
                    f"{best[label]:>8.0f}{best[label] / best['direct']:>9.3f}  {each}"
                )
            # Added latency is a property of one request, not of a saturated upstream (where
            # queueing dominates p50): measured again with a single connection.
            lat = {label: latency(url, args) for label, url in urls.items()}
            lines.append(f"  latency, 1 connection (wrk -t1 -c1 -d{args.latency_duration}s):")
            for label, r in lat.items():
                lines.append(
                    f"  {label:<26}{r['rps']:>9.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
                    f"{'':>8}{'':>9}{'':>8}{r['p50_ms'] - lat['direct']['p50_ms']:>+9.3f}"
                    f"{r['p99_ms'] - lat['direct']['p99_ms']:>+9.3f}"
                )
        for label, proxy in proxies.items():
            rss = proxy.rss()
            lines.append(
                f"  {label}: peak RSS per process {', '.join(f'{m:.0f}' for m in rss)} MB"
                f" (max {max(rss):.0f} MB, total {sum(rss):.0f} MB; total PSS now"
                f" {proxy.pss():.0f} MB)"
            )
    finally:
        for proxy in proxies.values():
            proxy.close()
        relay.close()
        stop(nginx)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument(
        "--variants", default="fast", help="comma-separated: fast, aiohttp, fast-asyncio"
    )
    parser.add_argument(
        "--gunicorn",
        default="gthread",
        help="comma-separated monolith worker flavours: gthread (kit up's), sync (gunicorn default)",
    )
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--gunicorn-threads", type=int, default=4)
    parser.add_argument(
        "--reuse-port",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one listening socket per gunicorn worker (kernel-balanced accepts)",
    )
    parser.add_argument("--latency-duration", type=int, default=3)
    parser.add_argument("--skip-static", action="store_true")
    parser.add_argument("--skip-monolith", action="store_true")
    parser.add_argument(
        "--split-cores",
        metavar="UPSTREAM:FRONT",
        help="monolith scenario only: pin gunicorn to the first CPU list and wrk, nginx and the"
        " proxies to the second (e.g. 0:1), as when the proxy does not share the upstream's"
        " cores; the static scenario (one nginx serves and proxies) is not pinned",
    )
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    args.variants = args.variants.split(",")
    args.gunicorn = args.gunicorn.split(",")
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    report = [
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds;"
        f" cores: {os.cpu_count()}; ratios are against direct and nginx measured in the same run"
    ]
    try:
        if not args.skip_static:
            report += scenario("static", work, "127.0.0.1", 0, ["/static"], args)
        if args.split_cores:
            upstream_cpus, _, front_cpus = args.split_cores.partition(":")
            CPUS["upstream"] = {int(c) for c in upstream_cpus.split(",")}
            CPUS["front"] = {int(c) for c in front_cpus.split(",")}
            report.append(
                f"monolith scenario pinned: gunicorn on CPUs {upstream_cpus}, the rest on {front_cpus}"
            )
        for flavour in [] if args.skip_monolith else args.gunicorn:
            monolith, port = start_monolith(work, flavour, args)
            command = gunicorn_command(flavour, port, args)
            title = "monolith " + " ".join(command[command.index("gunicorn") :])
            try:
                report += scenario(
                    title,
                    work,
                    "127.0.0.1",
                    port,
                    ["/healthz", "/products/1"],
                    args,
                    upstream_proc=monolith,
                )
            finally:
                stop(monolith)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(report))


if __name__ == "__main__":
    main()
