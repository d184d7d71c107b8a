"""An upstream that refuses connections while it restarts: with `timeouts.connect_retry` the
proxy keeps connecting and the client's request — a POST too, since a refused connection
carried none of it — is answered once the upstream is back, on either request path. Without
it (or past the window) the client gets the usual 502."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.proxy.proxy_helpers import ProxyThread, Upstream, base_config, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "aiohttp-path"])
def test_a_write_waits_for_a_restarting_upstream_and_is_applied_once(
    fast_path: bool,
    tmp_path: Path,
    free_port: int,
    upstream_factory: Callable[..., Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> None:
    config = base_config(
        tmp_path,
        {"monolith": f"http://127.0.0.1:{free_port}"},  # nothing listens there yet
        fast_path=fast_path,
        timeouts={"connect": 1.0, "total": 20.0, "connect_retry": 15.0},
    )
    proxy = proxy_factory(config)
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(trust_env=False, timeout=30) as client:
            answers.append(client.post(f"{proxy.url}/orders", json={"n": 1}))

    writer = threading.Thread(target=post)
    writer.start()
    counters = proxy.runtime.core.stats.counters
    wait_for(lambda: counters["connect_retries"] >= 3)  # refused, and refused again
    assert answers == []  # the client is waiting, not answered 502
    upstream = upstream_factory("monolith", free_port)  # the app is back
    writer.join(timeout=30)
    [answer] = answers
    assert answer.status_code == 200 and answer.json()["upstream"] == "monolith"
    assert upstream.seen()["count"] == 1  # applied once


def test_without_a_retry_window_a_refused_connection_is_a_502_at_once(
    tmp_path: Path, free_port: int, proxy_factory: Callable[..., ProxyThread]
) -> None:
    config = base_config(
        tmp_path,
        {"monolith": f"http://127.0.0.1:{free_port}"},
        timeouts={"connect": 1.0, "total": 5.0},
    )
    proxy = proxy_factory(config)
    with httpx.Client(trust_env=False, timeout=10) as client:
        answer = client.post(f"{proxy.url}/orders", json={"n": 1})
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_unavailable"
    assert proxy.runtime.core.stats.counters["connect_retries"] == 0
