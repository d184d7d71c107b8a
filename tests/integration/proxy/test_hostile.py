"""Malformed and hostile requests over a raw socket: clean 4xx, and the proxy keeps serving."""

from __future__ import annotations

import socket

import httpx
import pytest
from proxy_helpers import ProxyThread, Upstream

pytestmark = pytest.mark.integration


def _raw(proxy: ProxyThread, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes, read until the server closes or goes quiet; returns the raw answer."""
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def _status(answer: bytes) -> int:
    assert answer[:7] == b"HTTP/1." and answer[8:9] == b" ", answer[:200]
    return int(answer[9:12])


HOSTILE = {
    "cl_and_te": (
        b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "double_cl": (
        b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd"
    ),
    "bad_cl": b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
    "te_not_chunked": (
        b"POST /products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabcd"
    ),
    "te_obfuscated": (
        b"POST /products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: x\r\n\r\n0\r\n\r\n"
    ),
    "absolute_form": b"GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    "connect": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge_header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "many_headers_over_total": (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(20))
        + b"\r\n"
    ),
    "enormous_header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n",
    "long_target": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "oversize_body": (
        b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\nabc"
    ),
    "bad_chunk": (
        b"POST /products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n"
    ),
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n",
    "bare_lf_and_space_in_name": b"GET / HTTP/1.1\nHost : x\n\n",
    "null_in_header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
}
EXPECTED = {
    "absolute_form": 400,
    "connect": 400,
    "asterisk": 400,
    "huge_header": 431,
    "many_headers_over_total": 431,
    "long_target": 414,
    "oversize_body": 413,
}


@pytest.mark.parametrize("shape", sorted(HOSTILE))
def test_hostile_request_gets_a_clean_4xx_and_the_proxy_keeps_serving(
    shape: str, shop_proxy: ProxyThread, fresh_upstreams: dict[str, Upstream]
) -> None:
    answer = _raw(shop_proxy, HOSTILE[shape])
    status = _status(answer)
    assert 400 <= status < 500, answer[:300]
    if shape in EXPECTED:
        assert status == EXPECTED[shape], answer[:300]
        assert b'"error"' in answer
    assert b"/smuggled" not in answer
    assert fresh_upstreams["monolith"].seen()["count"] == 0  # nothing reached the upstream
    with httpx.Client(base_url=shop_proxy.url, trust_env=False, timeout=5) as client:
        assert client.get("/after").status_code == 200


def test_chunked_body_over_the_limit_is_refused_with_413(
    tmp_path, upstreams: dict[str, Upstream], proxy_factory
) -> None:
    from proxy_helpers import base_config

    config = base_config(
        tmp_path,
        {"monolith": upstreams["monolith"].url},
        limits={"max_body_bytes": 100_000},
    )
    proxy = proxy_factory(config)
    chunk = b"y" * 50_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
    answer = _raw(
        proxy,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
    )
    assert _status(answer) == 413
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=5) as client:
        assert client.post("/upload", content=b"small").json()["body_len"] == 5
