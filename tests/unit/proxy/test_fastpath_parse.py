"""The fast path's strict request-head check: anything unusual is handed to the full parser."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from strangler_proxy.fastpath.head import ParsedRequest, parse_head
from strangler_proxy.policy import canary_bucket, sticky_key
from strangler_proxy.stats import Stats


def _parse(head: bytes) -> ParsedRequest | None:
    return parse_head(head, 8192, 16384)


def test_a_plain_get_is_accepted_with_its_parts() -> None:
    parsed = _parse(
        b"GET /products/1?x=%20y HTTP/1.1\r\nHost: shop\r\nX-Request-ID: r1\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nAccept: */*"
    )
    assert parsed is not None
    assert (parsed.method, parsed.target, parsed.path) == (
        "GET",
        b"/products/1?x=%20y",
        "/products/1",
    )
    assert (parsed.length, parsed.keep_alive, parsed.host) == (0, True, b"shop")
    assert (parsed.request_id, parsed.prior_xff) == (b"r1", b"10.0.0.1")
    assert [h[0] for h in parsed.headers] == [
        b"host",
        b"x-request-id",
        b"x-forwarded-for",
        b"accept",
    ]
    assert parsed.tokens == frozenset()
    assert parsed.line == b"GET /products/1?x=%20y HTTP/1.1\r\n"  # forwarded verbatim


def test_connection_tokens_and_close_are_understood() -> None:
    parsed = _parse(b"POST /a HTTP/1.1\r\nConnection: close, X-Secret\r\nContent-Length: 3")
    assert parsed is not None
    assert parsed.length == 3 and parsed.keep_alive is False
    assert parsed.tokens == frozenset({b"close", b"x-secret"})


def test_header_values_lose_surrounding_blanks_and_keep_inner_ones() -> None:
    parsed = _parse(
        b"GET / HTTP/1.1\r\nX-A:  a b \t\r\nX-B:\r\nX-C: \t \r\nX-D:\tv\xe9\r\nHost: h "
    )
    assert parsed is not None
    assert [(h[1], h[2]) for h in parsed.headers] == [
        (b"X-A", b"a b"),
        (b"X-B", b""),
        (b"X-C", b""),
        (b"X-D", b"v\xe9"),  # obs-text is allowed in values
        (b"Host", b"h"),
    ]
    assert parsed.host == b"h"


def test_a_head_without_header_lines_is_accepted() -> None:
    parsed = _parse(b"DELETE /orders/1 HTTP/1.1")
    assert parsed is not None
    assert (parsed.method, parsed.path, parsed.headers, parsed.host) == (
        "DELETE",
        "/orders/1",
        [],
        None,
    )
    assert parsed.line == b"DELETE /orders/1 HTTP/1.1\r\n"


def test_a_request_id_named_in_connection_is_not_kept() -> None:
    parsed = _parse(b"GET / HTTP/1.1\r\nConnection: X-Request-ID\r\nX-Request-ID: r1")
    assert parsed is not None and parsed.request_id is None


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.0\r\nHost: x",  # HTTP/1.0: keep-alive rules differ
        b"HEAD / HTTP/1.1\r\nHost: x",  # HEAD: bodiless response framing
        b"CONNECT x:443 HTTP/1.1\r\nHost: x",
        b"GET http://evil/ HTTP/1.1\r\nHost: x",  # absolute-form
        b"OPTIONS * HTTP/1.1\r\nHost: x",
        b"GET /a#frag HTTP/1.1\r\nHost: x",
        b"GET /a%2Fb HTTP/1.1\r\nHost: x",  # percent-encoded path: routing must decode
        b"GET /a/../b HTTP/1.1\r\nHost: x",  # dot segments
        b"GET / HTTP/1.1\r\nHost : x",  # space before the colon
        b"GET / HTTP/1.1\r\nHost: x\r\n folded",  # obs-fold
        b"GET / HTTP/1.1\nHost: x",  # bare LF
        b"GET / HTTP/1.1\r\nHost: x\rY",  # bare CR
        b"GET / HTTP/1.1\r\nX-A: a\x00b",  # NUL
        b"GET / HTTP/1.1\r\nX-A: a\rb\r\nX-B: c",  # bare CR inside a value, CRLF after it
        b"GET / HTTP/1.1\r\nX-A: a\nX-B: b\r\nX-C: c",  # bare LF inside a value
        b"GET / HTTP/1.1\r\nX-A: a\x7fb",  # DEL
        b"GET / HTTP/1.1\r\nX-A: a\x1bb",  # ESC
        b"GET / HTTP/1.1\r\nX-\x01A: a",  # control character in a name
        b"GET / HTTP/1.1\r\n: a",  # empty name
        b"GET / HTTP/1.1\r\nX-A a",  # no colon
        b"GET /\x01 HTTP/1.1\r\nHost: x",  # control character in the target
        b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4",  # duplicate CL
        b"POST / HTTP/1.1\r\nContent-Length: +4",
        b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade",
        b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b",  # two Hosts
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x",  # over max_line_bytes
        b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 17000,  # over max_header_bytes
        # Blanks, then a control character, within max_header_bytes (refused in linear time;
        # a backtracking header regex once spent seconds of CPU on this one).
        b"GET / HTTP/1.1\r\nX-A:" + b" \t" * 8000 + b"\x01",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"X: v",
        b"\x16\x03\x01\x02\x00 hello",
    ],
)
def test_unusual_heads_are_handed_to_the_full_parser(head: bytes) -> None:
    assert _parse(head) is None


def test_a_non_ascii_sticky_key_reads_as_the_aiohttp_path_reads_it() -> None:
    request = _parse(b"GET / HTTP/1.1\r\nX-User: \xc3\xa9\xff")
    assert request is not None
    route = SimpleNamespace(sticky_header="X-User", sticky_cookie=None)
    key = sticky_key(route, None, request.header, "10.0.0.1")  # type: ignore[arg-type]
    assert key == "\u00e9\udcff"  # aiohttp's reading of those bytes (UTF-8, surrogateescape)
    assert canary_bucket(key) == canary_bucket("\u00e9\udcff")


def test_stats_exports_merge_exactly() -> None:
    a, b, total = Stats(), Stats(), Stats()
    for stats, n in ((a, 3), (b, 5)):
        for i in range(n):
            stats.observe("/x", "monolith", 200 if i else 502, 1.5 * i, proxy_error=not i)
        stats.incr("fallbacks", n)
    total.merge(a.export())
    total.merge(b.export())
    row = total.snapshot()["series"][0]  # type: ignore[index]
    assert (row["requests"], row["errors"], row["proxy_errors"]) == (8, 2, 2)
    assert total.counters["fallbacks"] == 8
    assert sum(total.series[("/x", "monolith")].buckets) == 8
    assert len(total.series[("/x", "monolith")].samples) == 8
