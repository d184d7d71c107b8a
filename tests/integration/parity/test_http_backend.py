"""The HTTP backend over real loopback sockets: keep-alive reuse, servers that drop idle
connections, what is forwarded, and that a non-idempotent request is never sent twice."""

from __future__ import annotations

import pytest

from parity.model import Request
from parity.runner import BackendError, HttpBackend

pytestmark = pytest.mark.integration


def test_requests_reuse_one_kept_alive_connection(scripted_server):
    server = scripted_server(per_connection=100)
    with HttpBackend(server.url) as backend:
        statuses = [backend.send(Request("GET", f"/products/{i}")).status for i in range(5)]
    assert statuses == [200] * 5
    assert server.connections == 1


def test_a_get_on_a_connection_the_server_dropped_is_retried_on_a_new_one(scripted_server):
    server = scripted_server(per_connection=1)
    with HttpBackend(server.url) as backend:
        first = backend.send(Request("GET", "/products/1"))
        second = backend.send(Request("GET", "/products/2"))
    assert (first.status, second.status) == (200, 200)
    assert server.connections == 2
    assert second.json() == {"n": 3}  # the dropped attempt reached the server, then the retry


def test_a_post_on_a_dropped_connection_is_an_error_and_never_sent_twice(scripted_server):
    server = scripted_server(per_connection=1)
    with HttpBackend(server.url) as backend:
        backend.send(Request("GET", "/products/1"))
        with pytest.raises(BackendError, match="closed the kept-alive connection"):
            backend.send(Request("POST", "/orders", body=b'{"sku": "A"}'))
    posts = [h for h in server.heads if h.startswith(b"POST ")]
    assert len(posts) == 1


def test_forwarded_headers_and_body(scripted_server):
    server = scripted_server(per_connection=10)
    request = Request(
        "POST",
        "/orders",
        query=[("dry", "1"), ("tag", "a"), ("tag", "b")],
        headers={"X-Trace": "t-1", "Accept-Encoding": "gzip", "Host": "evil.example"},
        body=b'{"sku": "A"}',
    )
    api = server.url.replace("http://", "http://user:pw@") + "/api"
    with HttpBackend(api, headers={"Authorization": "Bearer s3cret"}) as backend:
        backend.send(request)
    head = server.heads[0].decode().lower()
    lines = head.split("\r\n")
    assert lines[0] == "post /api/orders?dry=1&tag=a&tag=b http/1.1"
    port = server.url.rsplit(":", 1)[1]
    assert f"host: 127.0.0.1:{port}" in lines and "x-trace: t-1" in lines
    assert not any(line.startswith("host:") and "evil" in line for line in lines)
    assert "authorization: bearer s3cret" in lines and "content-length: 12" in lines
    assert "accept-encoding: identity" in lines and "accept-encoding: gzip" not in lines


def test_a_redirect_is_an_answer_to_compare_not_followed(scripted_server):
    server = scripted_server(
        per_connection=10, status_line=b"HTTP/1.1 302 Found", extra_headers=b"Location: /x\r\n"
    )
    with HttpBackend(server.url) as backend:
        response = backend.send(Request("GET", "/old"))
    assert response.status == 302 and response.headers["location"] == "/x"
    assert len(server.heads) == 1


@pytest.mark.parametrize(
    ("answer", "close", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
         False, b"abcde"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", True,
         b"until the end"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False, b""),
    ],
    ids=["chunked", "close-delimited", "no-content"],
)  # fmt: skip
def test_every_body_framing_is_read_whole(scripted_server, answer, close, body):
    server = scripted_server(per_connection=10, answer=answer, close_after_answer=close)
    with HttpBackend(server.url) as backend:
        first = backend.send(Request("GET", "/a"))
        second = backend.send(Request("GET", "/b"))
    assert first.body == body and second.body == body
    assert server.connections == (2 if close else 1)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nonly part",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_a_framed_body_cut_short_by_the_server_is_an_error_not_an_answer(scripted_server, answer):
    server = scripted_server(per_connection=10, answer=answer, close_after_answer=True)
    with HttpBackend(server.url) as backend:
        with pytest.raises(BackendError, match="closed the connection mid-answer"):
            backend.send(Request("GET", "/a"))
    assert len(server.heads) == 1  # a fresh connection: nothing to retry


def test_a_head_answer_carries_no_body_and_keeps_the_connection(scripted_server):
    server = scripted_server(
        per_connection=10, answer=b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"
    )
    with HttpBackend(server.url) as backend:
        heads = [backend.send(Request("HEAD", "/products/1")) for _ in range(2)]
    assert [(r.status, r.body, r.headers["content-length"]) for r in heads] == [
        (200, b"", "12")
    ] * 2
    assert server.connections == 1


def test_a_header_that_would_split_the_request_is_refused_unsent(scripted_server):
    server = scripted_server(per_connection=10)
    with HttpBackend(server.url) as backend:
        with pytest.raises(BackendError, match="not a valid header"):
            backend.send(Request("GET", "/a", headers={"X-Evil": "1\r\nX-Injected: yes"}))
        assert backend.send(Request("GET", "/b")).status == 200
    assert len(server.heads) == 1


def test_a_closed_backend_refuses_new_requests(scripted_server):
    server = scripted_server(per_connection=10)
    backend = HttpBackend(server.url)
    backend.send(Request("GET", "/a"))
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.send(Request("GET", "/b"))


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("ftp://127.0.0.1", {}, "http"),
        ("127.0.0.1:8000", {}, "http"),
        ("http://127.0.0.1:1", {"timeout": 0}, "timeout"),
        ("http://127.0.0.1:1", {"max_connections": 0}, "max_connections"),
    ],
)
def test_bad_backend_settings_are_refused_up_front(url, options, message):
    with pytest.raises(ValueError, match=message):
        HttpBackend(url, **options)
