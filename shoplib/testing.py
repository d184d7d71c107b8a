"""Small helpers for tests and benchmarks (no pytest import here)."""

from __future__ import annotations

import socket
import time
import urllib.request


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_http_ok(url: str, timeout_s: float = 20.0) -> None:
    """Poll `url` until it answers 2xx, or raise TimeoutError naming it."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if 200 <= response.status < 300:
                    return
        except Exception as error:  # not up yet
            last = error
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready in {timeout_s}s: {last}")
