"""Loopback helpers: a fresh port, and waiting for an HTTP server to answer."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago and that this process has not handed out before.

    The kernel may offer a just-released port again, so picking several ports in a row (a
    manifest's proxy, admin and app ports) could yield the same one twice; remembering what
    was handed out makes ports picked by one process distinct.
    """
    with _handed_out_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no new free port on {host} after 100 tries")


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
