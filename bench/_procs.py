"""Process plumbing shared by the benchmarks: pick ports, wait for them, read a process's
memory from /proc, and stop what a bench started (by pid, never by name).

Benchmarks run as scripts (`.venv/bin/python bench/x.py`), which puts this folder on
sys.path, so they import it as `_procs`. The repository root is put there too, for
`tests.fixtures` (the project packages themselves are installed in the virtualenv).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kitcore.net import free_port  # noqa: E402
from tests.fixtures.process import start_proxy_cli  # noqa: E402

__all__ = [
    "ROOT",
    "free_port",
    "peak_rss_mb",
    "process_tree",
    "pss_mb",
    "start_proxy_cli",
    "stop_processes",
    "wait_port",
]


def wait_port(port: int, timeout: float = 20) -> None:
    """Block until 127.0.0.1:`port` accepts a connection (the server is listening)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def stop_processes(*procs: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM every process still running, then wait for each; kill one that outlives
    `timeout`. Signalling all first lets them shut down (and write results) side by side."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a supervisor and its workers, gunicorn and its own)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pids
    for child in children:
        pids += process_tree(int(child))
    return pids


def _status_mb(pid: int, path: str, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of a live process in MB; NaN once it is gone."""
    return _status_mb(pid, "status", "VmHWM:")


def pss_mb(pid: int) -> float:
    """Proportional set size in MB (shared pages split between their users); NaN if gone."""
    return _status_mb(pid, "smaps_rollup", "Pss:")
