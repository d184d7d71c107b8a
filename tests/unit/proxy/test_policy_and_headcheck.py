"""One routing decision and one head validator: the fast path and the aiohttp path agree.

The same request bytes are read by the fast path's parser (`parse_head`) and by the aiohttp
path's parser (`StrictRequestParser`); `policy.decide` over either reading gives the same
decision, and the fast path never accepts a head the shared validator refuses.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.base_protocol import BaseProtocol
from hypothesis import given, settings
from hypothesis import strategies as st

from strangler_proxy.config import Limits, ProxyConfig
from strangler_proxy.errors import ErrorShape
from strangler_proxy.fastpath.fullpath import HeadRefused, StrictRequestParser
from strangler_proxy.fastpath.head import parse_head
from strangler_proxy.headcheck import check_head
from strangler_proxy.policy import (
    ClientKeySpec,
    Decision,
    RywPins,
    cookie_value,
    decide,
)
from strangler_proxy.routes import MONOLITH, RouteTable, build_route
from strangler_proxy.server import raw_header_getter

LIMITS = Limits()
NAMES = ["X-Client-Id", "X-User", "Cookie", "Authorization", "Accept", "X-Forwarded-Host"]
_value_bytes = st.binary(min_size=0, max_size=12).map(
    lambda b: bytes(c for c in b if c >= 0x21 and c != 0x7F)  # visible ASCII and obs-text
)
_cookie = st.lists(
    st.tuples(st.sampled_from(["sid", "sess", "x"]), st.text('abcé0="', max_size=6)),
    max_size=3,
).map(lambda kv: "; ".join(f"{k}={v}" for k, v in kv).encode("utf-8"))
_headers = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(NAMES), _value_bytes),
        st.tuples(st.just("Cookie"), _cookie),
    ),
    max_size=6,
)
_specs = st.one_of(
    st.none(),
    st.builds(
        ClientKeySpec,
        st.sampled_from(["header", "cookie", "hash_header"]),
        st.sampled_from(["X-Client-Id", "sid", "Authorization"]),
    ),
)
_modes = st.sampled_from(
    ["monolith", "extracted", "shadow", "canary:0", "canary:10", "canary:50", "canary:100"]
)


def _aiohttp_reading(head: bytes) -> tuple[tuple[bytes, bytes], ...]:
    loop = asyncio.new_event_loop()
    try:
        parser = StrictRequestParser(BaseProtocol(loop), loop, 2**16, max_field_size=2**16)
        parser.limits = LIMITS
        messages, _, _ = parser.feed_data(head + b"\r\n\r\n")
        return messages[0][0].raw_headers
    finally:
        loop.close()


def _head(method: str, headers: list[tuple[str, bytes]]) -> bytes:
    lines = [f"{method} /products/7 HTTP/1.1".encode(), b"Host: shop"]
    lines += [name.encode() + b": " + value for name, value in headers]
    return b"\r\n".join(lines)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    headers=_headers,
    mode=_modes,
    sticky=st.sampled_from([None, ("header", "X-User"), ("cookie", "sess")]),
    spec=_specs,
    pinned=st.sampled_from([None, MONOLITH, "catalog"]),
)
def test_both_paths_decide_the_same_for_the_same_request_bytes(
    method: str,
    headers: list[tuple[str, bytes]],
    mode: str,
    sticky: tuple[str, str] | None,
    spec: ClientKeySpec | None,
    pinned: str | None,
) -> None:
    route = build_route(
        method,
        "/products/<int:id>",
        "catalog",
        mode,
        sticky_header=sticky[1] if sticky and sticky[0] == "header" else None,
        sticky_cookie=sticky[1] if sticky and sticky[0] == "cookie" else None,
    )
    match = RouteTable([route]).match(method, "/products/7")
    head = _head(method, headers)
    fast = parse_head(head, LIMITS.max_line_bytes, LIMITS.max_header_bytes)
    assert fast is not None
    slow = raw_header_getter(_aiohttp_reading(head))
    pins = RywPins({"catalog": 5.0})
    if pinned is not None:
        key = decide(match, "POST", fast.header, "10.0.0.9", spec, pins, 0.0).pin_key
        assert key is not None
        pins.record("catalog", key, pinned, 0.0)
    on_fast = decide(match, method, fast.header, "10.0.0.9", spec, pins, 1.0)
    on_slow = decide(match, method, slow, "10.0.0.9", spec, pins, 1.0)
    assert on_fast == on_slow


_line = st.one_of(
    st.sampled_from(
        [
            b"GET /x HTTP/1.1",
            b"GET  /x HTTP/1.1",
            b"GET /x  HTTP/1.1",
            b"GET /x",
            b"GET /x HTTP/2.0",
            b"GET /x HTTP/1.0",
            b"GET /x HTTP/0.9",
            b"CONNECT /x HTTP/1.1",
            b"GET http://evil/ HTTP/1.1",
            b"POST /a?b=c HTTP/1.1",
            b"get /x HTTP/1.1",
        ]
    ),
    st.binary(max_size=24),
)
_header_line = st.one_of(
    st.sampled_from(
        [
            b"Host: a",
            b"Expect: 100-continue",
            b"Expect: magic",
            b"Content-Length: 5",
            b"Content-Length: 99999999999",
            b"X-A: \xc3\xa9",
            b"Bad Header: x",
            b"X-B:",
        ]
    ),
    st.binary(max_size=16).filter(lambda b: b"\r\n" not in b),
)


@settings(max_examples=400, deadline=None)
@given(line=_line, header_lines=st.lists(_header_line, max_size=5))
def test_the_fast_path_never_accepts_a_head_the_shared_validator_refuses(
    line: bytes, header_lines: list[bytes]
) -> None:
    head = b"\r\n".join([line, *header_lines])
    if parse_head(head, LIMITS.max_line_bytes, LIMITS.max_header_bytes) is not None:
        assert check_head(head, LIMITS) is None


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET /x", 400),
        (b"GET /x HTTP/2.0", 400),
        (b"GET /x HTTP/0.9", 400),
        (b"GET  /x HTTP/1.1", 400),
        (b"GET /x  HTTP/1.1", 400),
        (b"CONNECT /x HTTP/1.1", 400),
        (b"GET http://other/ HTTP/1.1", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1", 414),
    ],
)
def test_the_aiohttp_parser_gives_the_shared_verdict_on_odd_request_lines(
    line: bytes, status: int
) -> None:
    refusal = check_head(line, LIMITS)
    assert refusal is not None and refusal.status == status
    loop = asyncio.new_event_loop()
    try:
        parser = StrictRequestParser(BaseProtocol(loop), loop, 2**16, max_line_size=2**16)
        parser.limits = LIMITS
        with pytest.raises(HeadRefused) as raised:
            parser.feed_data(line + b"\r\nHost: a\r\n\r\n")
        assert raised.value.refusal == refusal
    finally:
        loop.close()


def test_more_headers_than_the_limit_get_the_proxys_431() -> None:
    head = b"\r\n".join([b"GET /x HTTP/1.1", *(b"X-%d: v" % i for i in range(101))])
    refusal = check_head(head, LIMITS)
    assert refusal is not None and (refusal.status, refusal.code) == (431, "headers_too_large")


def test_a_read_after_a_write_goes_to_the_side_that_took_the_write_for_the_window() -> None:
    table = RouteTable(
        [
            build_route("POST", "/products", "catalog", "monolith"),
            build_route("GET", "/products/<int:id>", "catalog", "extracted"),
        ]
    )
    spec = ClientKeySpec("header", "X-Client-Id")
    pins = RywPins({"catalog": 2.0})

    def header_of(client: bytes):  # type: ignore[no-untyped-def]
        return lambda name: client if name == b"x-client-id" else None

    write = decide(table.match("POST", "/products"), "POST", header_of(b"a"), "h", spec, pins)
    assert write.target == MONOLITH and write.pin_key == "a"
    pins.record("catalog", "a", write.target, 10.0)
    read = table.match("GET", "/products/1")
    assert decide(read, "GET", header_of(b"a"), "h", spec, pins, 11.0) == Decision(
        MONOLITH, pinned=True
    )
    assert decide(read, "GET", header_of(b"b"), "h", spec, pins, 11.0).target == "catalog"
    assert decide(read, "GET", header_of(b"a"), "h", spec, pins, 12.5).target == "catalog"


def test_read_your_writes_pins_are_bounded() -> None:
    pins = RywPins({"catalog": 60.0}, capacity=3)
    for i in range(10):
        pins.record("catalog", f"c{i}", MONOLITH, 0.0)
    assert len(pins) == 3
    assert pins.side("catalog", "c0", 1.0) is None and pins.side("catalog", "c9", 1.0)


def test_a_hashed_client_key_never_keeps_the_header_value() -> None:
    spec = ClientKeySpec("hash_header", "Authorization")
    key = spec.read(lambda name: b"Bearer secret-token" if name == b"authorization" else None)
    assert key is not None and "secret" not in key and len(key) == 24


def test_cookie_values_are_read_the_same_way_everywhere() -> None:
    assert cookie_value(b'a=1; sid="x y"; sid=2', "sid") == b"x y"
    assert cookie_value(b"sidx=1", "sid") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"client_key": {"header": "X", "cookie": "y"}}, "one table entry"),
        ({"client_key": {"ip": "x"}}, "client_key must be one of"),
        ({"ryw_window_s": {"nope": 1.0}}, "not a service"),
        ({"ryw_window_s": {"catalog": -1}}, "seconds >= 0"),
        ({"error_template": "{not json"}, "must be JSON"),
        ({"error_template": '{"a": 1}'}, "{code}"),
    ],
)
def test_bad_policy_settings_are_refused_naming_the_field(
    data: dict[str, object], message: str
) -> None:
    upstreams = {"monolith": "http://127.0.0.1:1", "catalog": "http://127.0.0.1:2"}
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        ProxyConfig(upstreams=upstreams, **data)  # type: ignore[arg-type]


def test_an_error_template_gives_the_apps_shape() -> None:
    shape = ErrorShape('{"status": "{status}", "detail": "{message}", "route": "{route}"}')
    assert shape.body(502, "upstream_unavailable", "down") == b'{"status": 502, "detail": "down"}'
    assert ErrorShape().body(413, "payload_too_large", "big") == (
        b'{"error": {"code": "payload_too_large", "message": "big"}}'
    )


def test_a_held_route_is_decided_held_for_every_method_and_client() -> None:
    table = RouteTable([build_route("POST", "/products", "catalog", "held")])
    pins = RywPins({"catalog": 2.0})
    for client in (b"a", b"b"):
        decision = decide(
            table.match("POST", "/products"), "POST", lambda _n, c=client: c, "h", None, pins
        )
        assert decision == Decision("catalog", held=True)  # no pin: nothing was served
