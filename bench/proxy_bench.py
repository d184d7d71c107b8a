"""Proxy overhead benchmark: direct vs through strangler_proxy vs through nginx, same run.

    .venv/bin/python bench/proxy_bench.py [--duration 10] [--connections 32]
                                          [--upstream-url http://127.0.0.1:5000/healthz]

Without --upstream-url the upstream is nginx serving a trivial static answer (the cheapest
possible upstream, so proxy cost dominates). With it (e.g. the gunicorn-served monolith's
cheap endpoint) that URL is measured directly and through both proxies. Needs `wrk` and
`nginx` (Debian packages); installs them with apt-get when missing and running as root.
Prints requests/s, p50/p99 latency, ratios, and the proxy's peak RSS. Not a test: no
assertions, figures only (copy them into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


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


def run_wrk(url: str, duration: int, connections: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
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


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--upstream-url",
        default=None,
        help="measure this upstream instead of nginx's static answer",
    )
    args = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    static_port, nginx_proxy_port = free_port(), free_port()
    if args.upstream_url:
        parts = urlsplit(args.upstream_url)
        upstream_host, upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path or "/"
        direct_url = args.upstream_url
    else:
        upstream_host, upstream_port, path = "127.0.0.1", static_port, "/static"
        direct_url = f"http://127.0.0.1:{static_port}{path}"
    (work / "nginx.conf").write_text(
        NGINX_CONF.format(
            work=work,
            static_port=static_port,
            proxy_port=nginx_proxy_port,
            upstream_host=upstream_host,
            upstream_port=upstream_port,
        )
    )
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(
            subprocess.Popen(
                [nginx_binary(), "-c", str(work / "nginx.conf"), "-p", str(work)],
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
        wait_port(static_port)
        wait_port(nginx_proxy_port)
        config = work / "proxy.toml"
        config.write_text(f"""
listen_port = 0
admin_port = 0
admin_token_file = "{work / "token"}"
store_url = "sqlite:///{work / "routes.db"}"
[upstreams]
monolith = "http://{upstream_host}:{upstream_port}"
[shadow]
jsonl_path = "{work / "shadow.jsonl"}"
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_PROXY_")}
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from kit.commands.proxy import cli; cli()",
                "run",
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        procs.append(proxy)
        assert proxy.stdout is not None
        if not select.select([proxy.stdout], [], [], 30)[0]:
            raise RuntimeError("proxy did not start")
        info = json.loads(proxy.stdout.readline())
        targets = {
            "direct": direct_url,
            "strangler_proxy": info["proxy"] + path,
            "nginx": f"http://127.0.0.1:{nginx_proxy_port}{path}",
        }
        results = {}
        for name, url in targets.items():
            run_wrk(url, 2, args.connections, args.threads)  # warm-up
            results[name] = run_wrk(url, args.duration, args.connections, args.threads)
        rss = peak_rss_mb(proxy.pid)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    upstream_label = args.upstream_url or "nginx static answer"
    print(
        f"upstream: {upstream_label}; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s; cores: {os.cpu_count()}"
    )
    print(f"{'target':<16}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    for name, r in results.items():
        print(
            f"{name:<16}{r['rps']:>12.0f}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}"
            f"{r['non_2xx']:>10.0f}"
        )
    direct, ours, nginx = results["direct"], results["strangler_proxy"], results["nginx"]
    print(f"proxy/direct throughput ratio: {ours['rps'] / direct['rps']:.3f}")
    print(f"proxy/nginx throughput ratio:  {ours['rps'] / nginx['rps']:.3f}")
    print(
        f"added latency vs direct: p50 {ours['p50_ms'] - direct['p50_ms']:+.3f} ms, "
        f"p99 {ours['p99_ms'] - direct['p99_ms']:+.3f} ms"
    )
    print(f"proxy peak RSS: {rss:.1f} MB")


if __name__ == "__main__":
    main()
