"""The lean hot path: which requests take it, and that handed-off ones behave as before."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from proxy_helpers import ProxyThread

pytestmark = pytest.mark.integration


def _handoffs(proxy: ProxyThread) -> int:
    return proxy.runtime.core.stats.counters["slow_path_handoffs"]


def _connect(proxy: ProxyThread) -> socket.socket:
    port = int(proxy.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_responses(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """Read `count` Content-Length framed responses; returns (head, body) pairs."""
    data = b""
    out: list[tuple[bytes, bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk
            rest += chunk
        out.append((head, rest[:length]))
        data = rest[length:]
    return out


def test_ordinary_requests_never_leave_the_fast_path(
    shop_proxy: ProxyThread, client: httpx.Client
) -> None:
    for i in range(5):
        assert client.get(f"/plain/{i}").status_code == 200
    assert client.post("/orders", content=b'{"qty": 1}').json()["body"] == '{"qty": 1}'
    assert client.delete("/orders/1").status_code == 200
    assert _handoffs(shop_proxy) == 0


def test_unusual_requests_are_handed_off_and_still_answered(shop_proxy: ProxyThread) -> None:
    # A handoff is per connection (everything after it stays on the aiohttp path): one each.
    with httpx.Client(base_url=shop_proxy.url, trust_env=False, timeout=10) as client:
        assert client.head("/products").status_code == 200
    with httpx.Client(base_url=shop_proxy.url, trust_env=False, timeout=10) as client:
        assert client.put("/blob", content=iter([b"ab", b"cd"])).json()["body_len"] == 4
    with httpx.Client(base_url=shop_proxy.url, trust_env=False, timeout=10) as client:
        assert client.get("/a%2Fb").status_code == 200
    with _connect(shop_proxy) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
        head, body = _read_responses(sock, 1)[0]
    assert head.startswith(b"HTTP/1.") and json.loads(body)["path"] == "/old"
    assert _handoffs(shop_proxy) == 4


def test_pipelined_requests_are_answered_in_order(shop_proxy: ProxyThread) -> None:
    with _connect(shop_proxy) as sock:
        sock.sendall(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = _read_responses(sock, 3)
    paths = [json.loads(body)["path"] for _, body in answers]
    assert paths == ["/first", "/second", "/third"]
    assert json.loads(answers[1][1])["body"] == "hello"
    assert _handoffs(shop_proxy) == 0


def test_a_request_trickling_in_byte_by_byte_is_served(shop_proxy: ProxyThread) -> None:
    raw = b"POST /slowly HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    with _connect(shop_proxy) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(raw)):
            sock.send(raw[i : i + 1])
        head, body = _read_responses(sock, 1)[0]
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["body"] == "abc"


def test_connection_close_is_honoured(shop_proxy: ProxyThread) -> None:
    with _connect(shop_proxy) as sock:
        sock.sendall(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _ = _read_responses(sock, 1)[0]
        assert b"\r\nConnection: close" in head
        assert sock.recv(1) == b""


def test_a_handoff_mid_connection_keeps_the_earlier_answers_intact(
    shop_proxy: ProxyThread,
) -> None:
    with _connect(shop_proxy) as sock:
        sock.sendall(
            b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    first, _, rest = data.partition(b" 400 Bad Request")
    assert b'"/fast"' in first
    assert rest and b"/smuggled" not in data
