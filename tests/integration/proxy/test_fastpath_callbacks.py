"""The fast path's callback flow (a warm pooled upstream connection, no Task per request):
retries, timeouts, streamed answers and vanished clients behave as on the coroutine path."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from proxy_helpers import ProxyThread, Upstream, base_config, wait_for

from strangler_proxy.config import Timeouts
from tests.fixtures.scripted_http import ScriptedHttpServer

pytestmark = pytest.mark.integration


def test_a_reused_connection_the_upstream_dropped_is_retried_for_idempotent_requests_only(
    tmp_path: Path,
    scripted_server: Callable[..., ScriptedHttpServer],
    proxy_factory: Callable[..., ProxyThread],
) -> None:
    # Answers the first request of each connection (keep-alive), then reads the second one
    # and closes without a word: an upstream dropping an idle keep-alive connection just as
    # the proxy reuses it.
    upstream = scripted_server(per_connection=1)
    proxy = proxy_factory(base_config(tmp_path, {"monolith": upstream.url}))
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=10) as client:
        assert client.get("/first").json() == {"n": 1}  # opens the pooled connection
        # Reuses it (callback flow); the upstream reads /second and drops it unanswered; a
        # GET is safe to send again on a fresh connection: the answer is to the third head.
        assert client.get("/second").json() == {"n": 3}
        # A POST is not: the client gets a clean 502 naming the route, never a hang.
        dropped = client.post("/orders", content=b"{}")
        assert dropped.status_code == 502
        assert dropped.json()["error"]["code"] == "upstream_unavailable"
        assert dropped.json()["error"]["route"] == "<default>"
        assert client.get("/after").status_code == 200  # the proxy keeps serving
    assert upstream.dropped >= 2
    assert proxy.runtime.core.stats.counters["slow_path_handoffs"] == 0


@pytest.fixture
def slow_proxy(
    tmp_path: Path,
    fresh_upstreams: dict[str, Upstream],
    proxy_factory: Callable[..., ProxyThread],
) -> Iterator[ProxyThread]:
    config = base_config(
        tmp_path,
        {name: up.url for name, up in fresh_upstreams.items()},
        timeouts=Timeouts(connect=1.0, total=0.5).__dict__,
    )
    yield proxy_factory(config)
    fresh_upstreams["monolith"].control(reset=True)


def test_a_timeout_on_a_warm_connection_gives_504_and_the_client_connection_lives_on(
    slow_proxy: ProxyThread, fresh_upstreams: dict[str, Upstream]
) -> None:
    monolith = fresh_upstreams["monolith"]
    with httpx.Client(base_url=slow_proxy.url, trust_env=False, timeout=10) as client:
        assert client.get("/warm").status_code == 200  # the pool now holds a connection
        # The upstream takes /slow in and never answers it: only the proxy's own deadline
        # can answer the client (well before the client's 10 s timeout).
        monolith.control(hold=True)
        slow = client.get("/slow")
        assert monolith.seen()["held"] == 1
        assert slow.status_code == 504
        assert slow.json()["error"] | {"message": ""} == {
            "code": "upstream_timeout",
            "message": "",
            "route": "<default>",
            "service": "monolith",
        }
        monolith.control(reset=True)
        assert client.get("/again").json()["path"] == "/again"
    # the count drops on the proxy's loop right after the answer is written: wait for it
    wait_for(lambda: slow_proxy.runtime.core.in_flight == 0)


def test_a_large_answer_started_on_a_warm_connection_is_streamed_whole(
    shop_proxy: ProxyThread, client: httpx.Client
) -> None:
    assert client.get("/warm").status_code == 200
    for _ in range(2):
        response = client.get("/stream", params={"n": 1_000_000})
        assert response.status_code == 200
        assert response.content == b"x" * 1_000_000
    wait_for(lambda: shop_proxy.runtime.core.in_flight == 0)


def test_a_client_that_leaves_mid_request_costs_nothing_else(
    slow_proxy: ProxyThread, fresh_upstreams: dict[str, Upstream]
) -> None:
    port = int(slow_proxy.url.rsplit(":", 1)[1])
    with httpx.Client(base_url=slow_proxy.url, trust_env=False, timeout=10) as client:
        assert client.get("/warm").status_code == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")  # a fresh client...
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # ...warms its own way
            fresh_upstreams["monolith"].control(hold=True)  # its answer waits till it left
            sock.sendall(b"GET /left HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for(lambda: slow_proxy.runtime.core.in_flight == 1)  # sent upstream
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # ...and leaves (a reset) while its answer is on the way.
        wait_for(lambda: slow_proxy.runtime.core.in_flight == 0)
        fresh_upstreams["monolith"].control(reset=True)
        for i in range(3):
            assert client.get(f"/still/{i}").status_code == 200
    # The abandoned exchange was dropped, never answered late nor timed out: only the five
    # requests that got an answer were counted.
    # (counted on the proxy's loop just after the answer is written: wait for the last one)
    series = slow_proxy.runtime.core.stats.series

    def answered() -> int:
        return sum(s.requests for (_, t), s in list(series.items()) if t == "monolith")

    wait_for(lambda: answered() >= 5)
    assert answered() == 5
