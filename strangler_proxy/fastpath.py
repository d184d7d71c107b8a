"""Lean hot path: an asyncio.Protocol HTTP/1.1 front end and a keep-alive upstream pool.

Why: aiohttp's general-purpose server and client machinery cost ~150 us per proxied request;
the common case (a small, well-formed HTTP/1.1 request with a Content-Length body or none,
routed to a plain-http upstream) needs a fraction of that.

Safety by construction: the fast path only *accepts* requests it has validated strictly
(request line, every header line, sizes, at most one Content-Length made of digits, no
Transfer-Encoding/Upgrade/Expect, no NUL/bare CR or LF, no percent-encoded or dot-segment
path). Anything else - and every mode or option the fast path does not implement (shadow,
sticky cookies, HEAD, HTTP/1.0, https upstreams, bodies over `SMALL_BODY`) - is *handed off*:
the connection, with every byte received so far, is given to aiohttp's `RequestHandler` and the
existing `ProxyCore.handle` path answers, exactly as before (including all 4xx answers to
hostile input). A handoff happens only between requests, before anything was sent upstream.
Upstream responses are parsed with `httptools` (llhttp), relayed whole when small, else
streamed (re-chunked when their length is unknown) with back-pressure.

Why two flows: most requests find a warm pooled upstream connection and get a small answer.
Those are driven by plain callbacks (client `data_received` -> upstream write; upstream
`data_received` -> one client write): no Task, no Future, no timer per request, which is most
of what a request costs in Python. Everything else - a new upstream connection, fallback
routes, streamed answers, retries after a stale socket - runs the coroutine path below
(`FastServer.serve`), which the callback flow hands over to at any of those points. Timeouts
are deadlines checked by one periodic sweep instead of a timer per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import httptools
from aiohttp import web

from strangler_proxy.breaker import CircuitBreaker
from strangler_proxy.routes import (
    IDEMPOTENT_METHODS,
    MODE_CANARY,
    MODE_EXTRACTED,
    MODE_MONOLITH,
    MONOLITH,
    Match,
    Route,
)
from strangler_proxy.server import (
    HOP_BY_HOP,
    SMALL_BODY,
    SMALL_RESPONSE,
    ProxyCore,
    UpstreamFailure,
    canary_hit,
)

log = logging.getLogger("strangler_proxy")

_REQUEST_LINE = re.compile(rb"(GET|POST|PUT|PATCH|DELETE|OPTIONS) (/[!-\"$-~]*) HTTP/1\.1")
# One header line (after the CRLF that starts it): a token name, a colon, the value without
# surrounding blanks. The value may hold TAB, visible ASCII and obs-text, never another control
# character (NUL, bare CR or LF, ...), and the line must end at a CRLF (or the end of the head).
# With the request line regex, this validates every byte of a head: `findall` must match
# every line, or the head is refused. The value starts with a non-blank and the trailing
# blanks are only matched after a value, so the two `[ \t]*` never compete for one run of
# blanks and a refused line costs linear time (when they did, a value of blanks ending in a
# control character backtracked quadratically: seconds of CPU for a 16 KB head).
_HEADER_LINE = re.compile(
    rb"\r\n([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"(?:([^\x00-\x20\x7f](?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f])?)[ \t]*)?"
    rb"(?=\r\n|\Z)"
)
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HOP = frozenset(h.encode() for h in HOP_BY_HOP)
# Request headers the fast path refuses to handle itself (they change framing or semantics).
_HANDOFF_HEADERS = frozenset({b"transfer-encoding", b"upgrade", b"expect", b"http2-settings"})
# Request headers never copied as-is: hop-by-hop, our own Host, re-computed ones.
_REQUEST_SKIP = _HOP | {
    b"host",
    b"content-length",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
_RESPONSE_SKIP = _HOP | {b"content-length"}
_BODYLESS_METHODS = frozenset({"GET", "DELETE", "OPTIONS"})
_MAX_HEADERS = 100
IDLE_TIMEOUT = 75.0
_HIGH_WATER = 256 * 1024  # pause reading a client that pipelines more than this while busy
_IDLE_POOL = 512
#: A pooled upstream connection idle longer than this is closed rather than reused: shorter
#: than the upstream's own keep-alive (`kit up` runs gunicorn with 75 s), so the proxy never
#: writes into a connection the upstream is closing at that moment.
UPSTREAM_IDLE_S = 30.0


# Request headers parse_head looks at (everything else is only collected).
_SPECIAL_REQUEST = _HANDOFF_HEADERS | {
    b"content-length",
    b"host",
    b"connection",
    b"x-request-id",
    b"x-forwarded-for",
}
# Response headers the upstream side looks at or drops (hop-by-hop, framing, ours).
_SPECIAL_RESPONSE = _RESPONSE_SKIP | {b"x-served-by"}
_NO_TOKENS: frozenset[bytes] = frozenset()
_HAND_OFF = ""  # FastServer.plan: this request goes to the aiohttp path
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


class _Request:
    """A validated request: everything the fast path needs, as bytes where cheap."""

    __slots__ = (
        "method",
        "target",
        "path",
        "headers",
        "length",
        "body",
        "keep_alive",
        "host",
        "request_id",
        "prior_xff",
        "tokens",
        "line",
        "id_line",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        path: str,
        headers: list[tuple[bytes, bytes, bytes]],
        length: int,
        keep_alive: bool,
        host: bytes | None,
        request_id: bytes | None,
        prior_xff: bytes | None,
        tokens: frozenset[bytes],
        line: bytes,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.headers = headers  # (lower-case name, name, value), in order
        self.length = length  # Content-Length (0 when absent)
        self.body = b""  # filled in once the whole body is in
        self.keep_alive = keep_alive
        self.host = host
        self.request_id = request_id  # an incoming X-Request-ID (forwarded as is)
        self.prior_xff = prior_xff
        self.tokens = tokens  # Connection tokens (lower-case)
        self.line = line  # the validated request line with its CRLF, forwarded verbatim
        self.id_line: bytes | None = None  # the X-Request-ID we generated (kept on retries)

    def header(self, lower_name: bytes) -> bytes | None:
        for lower, _name, value in self.headers:
            if lower == lower_name:
                return value
        return None


def parse_head(head: bytes, max_line: int, max_header_bytes: int) -> _Request | None:
    """Strictly validate a request head (without the final CRLFCRLF); None means hand off."""
    crlf = head.count(b"\r\n")  # = the number of header lines
    if crlf > _MAX_HEADERS:
        return None
    line_end = head.find(b"\r\n") if crlf else len(head)
    first = _REQUEST_LINE.fullmatch(head, 0, line_end)
    if first is None:
        return None
    method, target = first.groups()
    if len(target) > max_line:
        return None
    raw_path = target.split(b"?", 1)[0]
    if b"%" in raw_path or b"/." in raw_path:
        return None
    if len(head) - line_end > max_header_bytes:
        return None
    pairs = _HEADER_LINE.findall(head, line_end) if crlf else []
    if len(pairs) != crlf:
        return None  # some line is not `token: value`, or holds a control character
    headers: list[tuple[bytes, bytes, bytes]] = []
    append = headers.append
    length: int | None = None
    host = request_id = prior_xff = None
    connection: list[bytes] | None = None
    special = _SPECIAL_REQUEST
    for name, value in pairs:
        lower = name.lower()
        if lower in special:
            if lower == b"host":
                if host is not None:
                    return None
                host = value
            elif lower == b"content-length":
                if length is not None or _DIGITS.fullmatch(value) is None:
                    return None
                length = int(value)
            elif lower == b"connection":
                if connection is None:
                    connection = []
                connection.append(value)
            elif lower == b"x-request-id":
                if request_id is None:
                    request_id = value
            elif lower == b"x-forwarded-for":
                if prior_xff is None:
                    prior_xff = value
            else:  # Transfer-Encoding, Upgrade, Expect, HTTP2-Settings
                return None
        append((lower, name, value))
    tokens = _NO_TOKENS
    keep_alive = True
    if connection:
        tokens = frozenset(
            t.strip().lower() for v in connection for t in v.split(b",") if t.strip()
        )
        if b"upgrade" in tokens:
            return None
        keep_alive = b"close" not in tokens
        if b"x-request-id" in tokens:
            request_id = None
        if b"x-forwarded-for" in tokens:
            prior_xff = None
    return _Request(
        method.decode(),
        target,
        raw_path.decode("ascii"),
        headers,
        length or 0,
        keep_alive,
        host,
        request_id,
        prior_xff,
        tokens,
        head[: line_end + 2] if crlf else head + b"\r\n",
    )


def error_bytes(status: int, code: str, message: str, close: bool, **extra: Any) -> bytes:
    """The shop's JSON error as a complete HTTP/1.1 response."""
    body = json.dumps({"error": {"code": code, "message": message, **extra}}).encode()
    reason = _REASONS.get(status, b"Error")
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status,
        reason,
        len(body),
    )
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


_REASONS = {502: b"Bad Gateway", 504: b"Gateway Timeout", 413: b"Payload Too Large"}


# -- upstream side ---------------------------------------------------------------------------
class _Exchange:
    """State of one request/response on an upstream connection.

    Driven by callbacks (`driver` set: the FastServer answers from the connection's callbacks)
    or by a coroutine, which waits on `waiter` - created only when someone waits: first for
    the response head (`wait_head`), then, when needed, for the end of the body
    (`wait_complete`).
    """

    __slots__ = (
        "loop",
        "waiter",
        "status",
        "reason",
        "lines",
        "connection",
        "chunks",
        "sink",
        "length_known",
        "content_length",
        "keep_alive",
        "received",
        "head_done",
        "complete",
        "error",
        "served_by",
        "driver",
        "proto",
        "request",
        "match",
        "target",
        "breaker",
        "started",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        driver: FastServer | None = None,
        proto: FastProtocol | None = None,
        request: _Request | None = None,
        match: Match | None = None,
        target: str = "",
        breaker: CircuitBreaker | None = None,
        started: float = 0.0,
    ) -> None:
        self.loop = loop
        self.waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.reason = b""
        self.lines: list[bytes] = []  # response header lines to relay, `Name: value\r\n`
        self.connection: list[bytes] = []  # values of the response's Connection headers
        self.chunks: list[bytes] = []
        self.sink: Callable[[bytes], None] | None = None
        self.length_known = False
        self.content_length: int | None = None
        self.keep_alive = True
        self.received = False
        self.head_done = False
        self.complete = False
        self.error: BaseException | None = None
        self.served_by = False  # the upstream sent its own X-Served-By
        self.driver = driver  # set: answered from the connection's callbacks (see begin)
        self.proto = proto
        self.request = request
        self.match = match
        self.target = target
        self.breaker = breaker
        self.started = started

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if self.complete or self.error is not None:
            return
        self.error = exc
        driver = self.driver
        if driver is not None:
            driver.failed(self, exc)
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        self.waiter = self.loop.create_future()
        await self.waiter

    async def wait_head(self) -> None:
        """Wait for the response head (raises what `fail` recorded)."""
        if not self.head_done:
            await self._wait()

    async def wait_complete(self) -> None:
        """Wait for the end of the body (raises what `fail` recorded)."""
        if not self.complete:
            await self._wait()

    def small(self) -> bool:
        """The answer is relayed whole: its length is known and at most SMALL_RESPONSE."""
        length = self.content_length  # never set without length_known
        return length is not None and length <= SMALL_RESPONSE

    def response(self, served_by: bytes | None, close: bool, body: bytes) -> bytes:
        """The client's response head (+ `body`), relaying the upstream's end-to-end headers."""
        status, reason = self.status, self.reason
        status_line = _STATUS_LINES.get((status, reason))
        if status_line is None:
            status_line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
            if len(_STATUS_LINES) < 256:
                _STATUS_LINES[(status, reason)] = status_line
        lines = self.lines
        if self.connection:
            tokens = frozenset(
                t.strip().lower() for v in self.connection for t in v.split(b",") if t.strip()
            )
            lines = [line for line in lines if line.split(b":", 1)[0].lower() not in tokens]
        if self.complete or self.small():
            framing = b"" if status in (204, 304) else b"Content-Length: %d\r\n" % len(body)
        elif self.content_length is not None:
            framing = b"Content-Length: %d\r\n" % self.content_length
        else:
            framing = b"Transfer-Encoding: chunked\r\n"
        return b"".join(
            (
                status_line,
                *lines,
                served_by or b"",
                framing,
                b"Connection: close\r\n\r\n" if close else b"\r\n",
                body,
            )
        )


class _UpstreamClosed(ConnectionError):
    """The upstream closed or broke the connection before the response was complete."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream; one parser, one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.usable = False
        self.parser = httptools.HttpResponseParser(self)
        self.informational = False
        self.idle_at = 0.0
        self.drop_served_by = pool.drop_served_by

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.usable = True

    def start(self, data: bytes, exchange: _Exchange) -> _Exchange:
        """Send a request (`data`, whole); `exchange` receives its response."""
        self.exchange = exchange
        assert self.transport is not None
        self.transport.write(data)
        return exchange

    # httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.complete:
            # A second response to one request: the connection cannot be trusted any more,
            # and whatever follows goes nowhere.
            self.usable = False
            self.exchange = _Exchange(self.pool.loop)

    def on_status(self, reason: bytes) -> None:
        self.exchange.reason += reason  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in _SPECIAL_RESPONSE:
            exchange = self.exchange
            assert exchange is not None
            if lower == b"content-length":
                exchange.length_known = True
                exchange.content_length = int(value) if value.isdigit() else None
            elif lower == b"transfer-encoding":
                exchange.length_known = True
            elif lower == b"connection":
                if value.lower() not in (b"keep-alive", b"close"):
                    exchange.connection.append(value)
            elif lower == b"x-served-by":
                if not self.drop_served_by:
                    exchange.lines.append(b"%s: %s\r\n" % (name, value))
            return  # every other hop-by-hop header is dropped
        self.exchange.lines.append(b"%s: %s\r\n" % (name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: discard, the real answer follows
            self.informational = True
            exchange.lines = []
            exchange.connection = []
            exchange.reason = b""
            exchange.length_known = False
            exchange.content_length = None
            return
        exchange.status = status
        exchange.keep_alive = self.parser.should_keep_alive()
        if status in (204, 304):
            exchange.length_known = True
            exchange.content_length = 0
        exchange.head_done = True
        driver = exchange.driver
        if driver is not None:
            if exchange.breaker is not None or not exchange.small():
                driver.head(self, exchange)
        else:
            exchange.wake()

    def on_body(self, data: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        if exchange.sink is not None:
            exchange.sink(data)
        else:
            exchange.chunks.append(data)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        exchange = self.exchange
        assert exchange is not None
        exchange.complete = True
        if exchange.driver is None:
            exchange.wake()

    # transport callbacks ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # unsolicited bytes: the connection cannot be trusted
            self.close()
            return
        exchange.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.usable = False
            self.close()
            if not exchange.complete:
                exchange.fail(_UpstreamClosed(f"invalid response: {exc}"))
                return
            # A complete answer followed by garbage: relay the answer, drop the connection.
        if exchange.complete and exchange.driver is not None:
            exchange.driver.deliver(self, exchange)

    def eof_received(self) -> bool | None:
        self._lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.usable = False
        exchange = self.exchange
        if exchange is None or exchange.complete:
            return
        if exchange.head_done and not exchange.length_known and exc is None:
            exchange.complete = True  # a close-delimited body ends here
            exchange.wake()
        else:
            exchange.fail(_UpstreamClosed("upstream closed the connection"))

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Keep-alive connections to one plain-http upstream (LIFO: warm connections first)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        connect_timeout: float,
        drop_served_by: bool = False,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.drop_served_by = drop_served_by
        self.idle: list[UpstreamConnection] = []
        self.host_header = f"Host: {host}:{port}\r\n".encode()

    def take(self, now: float) -> UpstreamConnection | None:
        """A warm idle connection (`now`: the loop's time), or None (the caller then connects,
        on the coroutine path)."""
        idle = self.idle
        if not idle:
            return None
        stale_before = now - UPSTREAM_IDLE_S
        while idle:
            conn = idle.pop()
            if conn.usable and conn.idle_at >= stale_before:
                return conn
            conn.close()
        return None

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        conn = self.take(self.loop.time())
        if conn is not None:
            return conn, True
        _, conn = await asyncio.wait_for(
            self.loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port),
            self.connect_timeout,
        )
        return conn, False

    def release(self, conn: UpstreamConnection) -> None:
        conn.exchange = None
        if conn.usable and len(self.idle) < _IDLE_POOL:
            conn.idle_at = self.loop.time()
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


# -- client side -----------------------------------------------------------------------------
class FastProtocol(asyncio.Protocol):
    """One client connection on the fast path (until it is handed off, if ever)."""

    __slots__ = (
        "server",
        "transport",
        "buffer",
        "busy",
        "closing",
        "remote",
        "remote_b",
        "xff_line",
        "task",
        "idle_since",
        "paused",
        "upstream",
        "exchange",
        "write_paused",
        "deadline",
    )

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closing = False
        self.remote = ""
        self.remote_b = b""
        self.xff_line = b""
        self.task: asyncio.Task[None] | None = None
        self.idle_since = 0.0
        self.paused = False
        self.upstream: UpstreamConnection | None = None
        self.exchange: _Exchange | None = None
        self.write_paused = False
        self.deadline = 0.0  # loop time the current upstream exchange times out (0: none)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.remote_b = self.remote.encode()
        self.xff_line = b"X-Forwarded-For: %s\r\n" % self.remote_b
        self.server.connections.add(self)
        self.idle_since = self.server.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
            return
        exchange = self.exchange
        if exchange is not None and exchange.driver is not None:
            # The client left while a callback-driven exchange was in flight: drop it.
            exchange.driver = None
            self.server.core.in_flight -= 1
            if self.upstream is not None:
                self.upstream.abort()
            self.exchange = self.upstream = None
            self.deadline = 0.0

    def eof_received(self) -> bool | None:
        if self.busy:
            self.closing = True
            return True  # finish the current answer, then close
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        if self.busy:
            buffer += data
            if len(buffer) > _HIGH_WATER and not self.paused:
                self.paused = True
                assert self.transport is not None
                self.transport.pause_reading()
            return
        if buffer:
            buffer += data
            data = bytes(buffer)
            buffer.clear()
        self._take(data)

    def _next(self) -> None:
        """Start the next buffered request, if any (called when the previous one is done)."""
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            self._take(data)

    def _take(self, data: bytes) -> None:
        """Start the request at the start of `data`, hand the connection off, or wait for more.

        `data` is every unprocessed byte of the connection; what is not consumed goes back to
        the buffer.
        """
        end = data.find(b"\r\n\r\n")
        server = self.server
        if end < 0:
            self.buffer += data
            # Not a complete head yet. Shapes we never accept (bare LF, oversize) go to the
            # full parser now, so it answers them instead of us waiting for more bytes.
            if len(data) > server.head_cap or data.count(b"\n") != data.count(b"\r\n"):
                self._handoff()
            return
        request = parse_head(data[:end], server.max_line, server.max_header_bytes)
        if request is None or request.length > server.max_fast_body:
            self.buffer += data
            self._handoff()
            return
        stop = end + 4 + request.length
        if len(data) < stop:
            self.buffer += data
            return  # wait for the rest of the body
        if request.length:
            request.body = data[end + 4 : stop]
        match = server.core.table.match(request.method, request.path)
        target = MONOLITH if match.route is None else server.plan(request, match, self.remote)
        if target == _HAND_OFF:
            self.buffer += data
            self._handoff()
            return
        if len(data) > stop:
            self.buffer += data[stop:]
        self.busy = True
        server.begin(self, request, match, target)

    async def _run(self, answer: Coroutine[Any, Any, bool]) -> None:
        """Await one request's answer on the coroutine path, then go on with the connection."""
        try:
            keep = await answer
        except asyncio.CancelledError:
            if self.transport is not None:
                self.transport.abort()
            return
        except ConnectionError:
            if self.transport is not None:
                self.transport.abort()
            return
        except Exception:  # a bug here must cost one connection, never the worker
            log.exception("fast path failed; closing the client connection")
            if self.transport is not None:
                self.transport.abort()
            return
        self.task = None
        self.settle(keep)

    def settle(self, keep: bool) -> None:
        """The answer is out: close, or wait for (or start) the next request."""
        self.busy = False
        transport = self.transport
        assert transport is not None
        server = self.server
        if not keep or self.closing or server.stopping:
            transport.close()
            return
        if self.paused:
            self.paused = False
            transport.resume_reading()
        self.idle_since = server.loop.time()
        if self.buffer:
            self._next()

    def _handoff(self) -> None:
        """Give this connection, and every byte read so far, to aiohttp's request handler."""
        transport = self.transport
        assert transport is not None
        self.server.connections.discard(self)
        if self.paused:
            self.paused = False
            transport.resume_reading()
        handler = self.server.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        data = bytes(self.buffer)
        self.buffer.clear()
        if data:
            handler.data_received(data)
        self.server.handoffs += 1
        self.server.core.stats.incr("slow_path_handoffs")


class FastServer:
    """Protocol factory + request logic of the fast path, bound to one ProxyCore."""

    def __init__(self, core: ProxyCore, fallback: web.Server) -> None:
        self.core = core
        self.fallback = fallback
        self.loop = asyncio.get_running_loop()
        config = core.config
        limits = config.limits
        self.max_line = limits.max_line_bytes
        self.max_header_bytes = limits.max_header_bytes
        self.max_fast_body = min(SMALL_BODY, limits.max_body_bytes)
        self.head_cap = limits.max_line_bytes + limits.max_header_bytes + 512
        self.total_timeout = config.timeouts.total
        # Deadlines are checked this often: a timeout fires at most a tenth late (0.25 s cap).
        self.tick = min(0.25, max(0.005, self.total_timeout / 10))
        self.served_by = config.served_by_header
        self.preserve_host = config.preserve_host
        self.connections: set[FastProtocol] = set()
        self.stopping = False
        self.handoffs = 0
        self.pools: dict[str, UpstreamPool] = {}
        self.served_by_lines: dict[str, bytes | None] = {}
        for name, base in config.upstreams.items():
            self.served_by_lines[name] = (
                b"X-Served-By: %s\r\n" % name.encode() if self.served_by else None
            )
            parts = urlsplit(base)
            if parts.scheme != "http" or parts.path not in ("", "/"):
                continue  # https or a base path: the aiohttp path handles these
            self.pools[name] = UpstreamPool(
                self.loop,
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                config.timeouts.connect,
                drop_served_by=self.served_by,
            )
        self.enabled = MONOLITH in self.pools
        self.monolith = self.pools.get(MONOLITH)
        self._sweeper: asyncio.Task[None] | None = None
        # X-Request-ID: a random per-process prefix and a counter (unique, and cheap).
        self._id_prefix = os.urandom(8).hex().encode()
        self._id_counter = 0

    def __call__(self) -> asyncio.Protocol:
        if not self.enabled or self.stopping:
            return self.fallback()
        return FastProtocol(self)

    # -- routing ---------------------------------------------------------------------------
    def plan(self, request: _Request, match: Match, remote: str) -> str | None:
        """The first target for a declared route: a name, None for a service this proxy does
        not know, or `_HAND_OFF`."""
        route = match.route
        if route is None:
            return MONOLITH
        kind = route.mode.kind
        if kind == MODE_MONOLITH:
            return MONOLITH
        if kind == MODE_EXTRACTED:
            return self._service_plan(route)
        if kind == MODE_CANARY:
            if route.sticky_cookie:
                return _HAND_OFF
            if self._canary_hit(request, route, match, remote):
                return self._service_plan(route)
            return MONOLITH
        return _HAND_OFF  # shadow (and anything new) stays on the full-featured path

    def _service_plan(self, route: Route) -> str | None:
        service = route.service
        if service not in self.core.breakers:
            return None
        if service not in self.pools:
            return _HAND_OFF
        return service

    @staticmethod
    def _canary_hit(request: _Request, route: Route, match: Match, remote: str) -> bool:
        def key() -> str:
            raw = None
            if route.sticky_header:
                raw = request.header(route.sticky_header.lower().encode())
            # Decoded as aiohttp decodes header values, so both paths pick the same bucket.
            return raw.decode("utf-8", "surrogateescape") if raw else remote

        return canary_hit(match.mode.threshold, key)

    # -- serving: the callback flow ----------------------------------------------------------
    def begin(
        self, proto: FastProtocol, request: _Request, match: Match, target: str | None
    ) -> None:
        """Start answering `request`: by callbacks when a warm upstream connection is at hand
        and the route needs no fallback, else on the coroutine path."""
        breaker: CircuitBreaker | None = None
        if target == MONOLITH:
            pool = self.monolith
        elif target is None or (
            match.route.fallback  # type: ignore[union-attr]
            and request.method in IDEMPOTENT_METHODS
        ):
            pool = None
        else:
            pool = self.pools[target]
            breaker = self.core.breakers[target]
        now = self.loop.time()
        conn = pool.take(now) if pool is not None else None
        if conn is None:
            proto.task = self.loop.create_task(
                proto._run(self.serve(proto, request, match, target))
            )
            return
        assert pool is not None and target is not None and conn.transport is not None
        started = time.perf_counter()
        data = self._wire(request, self._upstream_head(request, proto), pool)
        self.core.in_flight += 1
        exchange = conn.start(
            data, _Exchange(self.loop, self, proto, request, match, target, breaker, started)
        )
        proto.exchange = exchange
        proto.upstream = conn
        proto.deadline = now + self.total_timeout

    def head(self, conn: UpstreamConnection, exchange: _Exchange) -> None:
        """A callback-driven exchange got its response head: note it for the breaker, and
        hand a streamed answer to the coroutine path."""
        breaker = exchange.breaker
        if breaker is not None:
            if exchange.status >= 500:
                breaker.record_failure()
            else:
                breaker.record_success()
        if exchange.small():
            return
        exchange.driver = None
        proto = exchange.proto
        assert proto is not None
        proto.task = self.loop.create_task(proto._run(self._stream(proto, conn, exchange)))

    async def _stream(
        self, proto: FastProtocol, conn: UpstreamConnection, exchange: _Exchange
    ) -> bool:
        """The rest of a callback-started exchange whose answer must be streamed."""
        request, match, target = exchange.request, exchange.match, exchange.target
        assert request is not None and match is not None
        try:
            status, proxy_error = await self._relay(proto, request, conn, exchange, target, match)
        finally:
            self.core.in_flight -= 1
            proto.deadline = 0.0
        self._observe(match, target, status, exchange.started, proxy_error)
        return request.keep_alive

    def deliver(self, conn: UpstreamConnection, exchange: _Exchange) -> None:
        """A callback-driven exchange is complete: one write to the client, and done."""
        exchange.driver = None
        proto, request, match = exchange.proto, exchange.request, exchange.match
        assert proto is not None and request is not None and match is not None
        assert proto.transport is not None
        chunks = exchange.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        target = exchange.target
        proto.transport.write(
            exchange.response(self.served_by_lines[target], not request.keep_alive, body)
        )
        proto.exchange = proto.upstream = None
        proto.deadline = 0.0
        if exchange.keep_alive:
            self.pools[target].release(conn)
        else:
            conn.abort()
        self.core.in_flight -= 1
        self._observe(match, target, exchange.status, exchange.started, False)
        proto.settle(request.keep_alive)

    def failed(self, exchange: _Exchange, exc: BaseException) -> None:
        """A callback-driven exchange failed before anything reached the client."""
        exchange.driver = None
        proto = exchange.proto
        request = exchange.request
        match = exchange.match
        assert proto is not None and request is not None and match is not None
        if proto.upstream is not None:
            proto.upstream.abort()
        proto.exchange = proto.upstream = None
        proto.deadline = 0.0
        core = self.core
        core.in_flight -= 1
        if (
            isinstance(exc, _UpstreamClosed)
            and not exchange.received
            and request.method in IDEMPOTENT_METHODS
        ):
            # A pooled connection the upstream had closed: try again on a fresh one.
            proto.task = self.loop.create_task(
                proto._run(self.serve(proto, request, match, exchange.target))
            )
            return
        target = exchange.target
        if exchange.breaker is not None and not exchange.head_done:
            exchange.breaker.record_failure()
        failure = UpstreamFailure.of(target, exc, in_body=exchange.head_done)
        status = self._write_failure(proto, request, failure, match, target)
        self._observe(match, target, status, exchange.started, True)
        proto.settle(request.keep_alive)

    def _observe(
        self, match: Match, target: str, status: int, started: float, proxy_error: bool
    ) -> None:
        self.core.stats.observe(
            match.pattern,
            target,
            status,
            (time.perf_counter() - started) * 1000,
            proxy_error=proxy_error,
        )

    # -- serving: the coroutine path ---------------------------------------------------------
    async def serve(
        self, proto: FastProtocol, request: _Request, match: Match, target: str | None
    ) -> bool:
        """Answer one request; returns whether the client connection may be kept."""
        core = self.core
        started = time.perf_counter()
        core.in_flight += 1
        proxy_error = False
        try:
            head = self._upstream_head(request, proto)
            if target is None:
                service = match.service
                status = 502
                proto.transport.write(  # type: ignore[union-attr]
                    error_bytes(
                        502,
                        "upstream_unavailable",
                        f"service {service!r} is not configured on this proxy",
                        not request.keep_alive,
                        route=match.pattern,
                        service=service,
                    )
                )
                target = service
            elif target == MONOLITH:
                status, proxy_error = await self._forward(proto, request, head, MONOLITH, match)
            else:
                target, status, proxy_error = await self._to_service(
                    proto, request, head, target, match
                )
        finally:
            core.in_flight -= 1
        self._observe(match, target, status, started, proxy_error)
        return request.keep_alive

    def _upstream_head(self, request: _Request, proto: FastProtocol) -> list[bytes]:
        """The header lines sent upstream, but for Host (it depends on the upstream: see
        `_wire`, which joins the whole request; a fallback reuses these lines)."""
        out: list[bytes] = []
        append = out.append
        tokens = request.tokens
        for lower, name, value in request.headers:
            if lower in _REQUEST_SKIP or lower in tokens:
                continue
            append(b"%s: %s\r\n" % (name, value))
        prior = request.prior_xff
        append(
            b"X-Forwarded-For: %s, %s\r\n" % (prior, proto.remote_b) if prior else proto.xff_line
        )
        host = request.host
        append(
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: %s\r\n" % host
            if host
            else b"X-Forwarded-Proto: http\r\n"
        )
        if request.request_id is None:
            id_line = request.id_line
            if id_line is None:
                self._id_counter += 1
                id_line = request.id_line = b"X-Request-ID: %s%016x\r\n" % (
                    self._id_prefix,
                    self._id_counter,
                )
            append(id_line)
        if request.body or request.method not in _BODYLESS_METHODS:
            append(b"Content-Length: %d\r\n" % len(request.body))
        return out

    def _host_line(self, request: _Request, pool: UpstreamPool) -> bytes:
        if self.preserve_host and request.host:
            return b"Host: %s\r\n" % request.host
        return pool.host_header

    def _wire(self, request: _Request, head: list[bytes], pool: UpstreamPool) -> bytes:
        """The request as sent to `pool`'s upstream: request line, Host, `head`, body."""
        host = self._host_line(request, pool)
        return b"".join((request.line, host, *head, b"\r\n", request.body))

    async def _send(
        self, proto: FastProtocol, request: _Request, head: list[bytes], target: str
    ) -> tuple[UpstreamConnection, _Exchange]:
        """Send the request and wait for the response head (retry once on a stale socket)."""
        pool = self.pools[target]
        data = self._wire(request, head, pool)
        for attempt in (0, 1):
            try:
                conn, reused = await pool.acquire()
            except OSError as exc:  # the connect timeout (TimeoutError) included
                raise UpstreamFailure.of(target, exc) from exc
            exchange = conn.start(data, _Exchange(self.loop))
            proto.exchange = exchange
            proto.upstream = conn
            try:
                await exchange.wait_head()
            except TimeoutError as exc:
                conn.abort()
                raise UpstreamFailure.of(target, exc) from exc
            except _UpstreamClosed as exc:
                conn.abort()
                if (
                    attempt == 0
                    and reused
                    and not exchange.received
                    and request.method in IDEMPOTENT_METHODS
                ):
                    continue
                raise UpstreamFailure.of(target, exc) from exc
            except BaseException:
                conn.abort()
                raise
            return conn, exchange
        raise AssertionError("unreachable")  # pragma: no cover

    async def _forward(
        self, proto: FastProtocol, request: _Request, head: list[bytes], target: str, match: Match
    ) -> tuple[int, bool]:
        """Send to `target` and relay its answer; (status the client saw, proxy error?)."""
        proto.deadline = self.loop.time() + self.total_timeout
        try:
            try:
                conn, exchange = await self._send(proto, request, head, target)
            except UpstreamFailure as failure:
                return self._write_failure(proto, request, failure, match, target), True
            return await self._relay(proto, request, conn, exchange, target, match)
        finally:
            proto.deadline = 0.0

    async def _relay(
        self,
        proto: FastProtocol,
        request: _Request,
        conn: UpstreamConnection,
        exchange: _Exchange,
        target: str,
        match: Match,
    ) -> tuple[int, bool]:
        transport = proto.transport
        assert transport is not None
        close = not request.keep_alive
        served_by = self.served_by_lines[target]
        clean = False
        try:
            if exchange.complete or exchange.small():
                try:
                    await exchange.wait_complete()
                except (_UpstreamClosed, TimeoutError) as exc:
                    failure = UpstreamFailure.of(target, exc, in_body=True)
                    return self._write_failure(proto, request, failure, match, target), True
                body = b"".join(exchange.chunks)
                transport.write(exchange.response(served_by, close, body))
                clean = True
                return exchange.status, False
            # Streaming: large or unknown length.
            chunked = exchange.content_length is None
            transport.write(exchange.response(served_by, close, b""))
            write = transport.write
            if chunked:

                def sink(data: bytes) -> None:
                    if data:
                        write(b"%x\r\n%s\r\n" % (len(data), data))

            else:
                sink = write
            pending = exchange.chunks
            exchange.chunks = []
            for chunk in pending:
                sink(chunk)
            exchange.sink = sink
            if proto.write_paused and conn.transport is not None:
                conn.transport.pause_reading()
            try:
                await exchange.wait_complete()
            except (_UpstreamClosed, TimeoutError) as exc:
                # Headers are out: cutting the connection is the only honest signal left.
                raise ConnectionResetError(str(exc)) from exc
            if chunked:
                write(b"0\r\n\r\n")
            clean = True
            return exchange.status, False
        finally:
            proto.upstream = None
            proto.exchange = None
            if conn.transport is not None and proto.write_paused:
                conn.transport.resume_reading()
            if clean and exchange.keep_alive and exchange.complete:
                self.pools[target].release(conn)
            else:
                conn.abort()

    def _write_failure(
        self,
        proto: FastProtocol,
        request: _Request,
        failure: UpstreamFailure,
        match: Match,
        target: str,
    ) -> int:
        status, code = (
            (504, "upstream_timeout") if failure.timeout else (502, "upstream_unavailable")
        )
        assert proto.transport is not None
        proto.transport.write(
            error_bytes(
                status,
                code,
                failure.detail,
                not request.keep_alive,
                route=match.pattern,
                service=target,
            )
        )
        return status

    async def _to_service(
        self,
        proto: FastProtocol,
        request: _Request,
        head: list[bytes],
        service: str,
        match: Match,
    ) -> tuple[str, int, bool]:
        """Same decisions as ProxyCore._to_service: breaker, fallback for idempotent requests."""
        core = self.core
        route = match.route
        assert route is not None
        breaker = core.breakers[service]
        can_fallback = route.fallback and request.method in IDEMPOTENT_METHODS
        try:
            if can_fallback and not breaker.allow():
                core.stats.incr("breaker_short_circuits")
                status, err = await self._forward(proto, request, head, MONOLITH, match)
                return MONOLITH, status, err
            proto.deadline = self.loop.time() + self.total_timeout
            try:
                conn, exchange = await self._send(proto, request, head, service)
            except UpstreamFailure as failure:
                breaker.record_failure()
                if not can_fallback:
                    return (
                        service,
                        self._write_failure(proto, request, failure, match, service),
                        True,
                    )
                core.stats.incr("fallbacks")
                status, err = await self._forward(proto, request, head, MONOLITH, match)
                return MONOLITH, status, err
            if exchange.status >= 500:
                breaker.record_failure()
                if can_fallback:
                    conn.abort()
                    core.stats.incr("fallbacks")
                    status, err = await self._forward(proto, request, head, MONOLITH, match)
                    return MONOLITH, status, err
            else:
                breaker.record_success()
            status, err = await self._relay(proto, request, conn, exchange, service, match)
            return service, status, err
        finally:
            proto.deadline = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    def start_sweeper(self) -> None:
        """Deadlines and idle keep-alive connections are checked by one periodic sweep."""
        self._sweeper = self.loop.create_task(self._sweep(), name="fastpath-sweeper")

    async def _sweep(self) -> None:
        loop = self.loop
        next_idle_check = loop.time() + IDLE_TIMEOUT / 5
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            for proto in list(self.connections):
                deadline = proto.deadline
                if deadline and deadline <= now:
                    proto.deadline = 0.0
                    _expire(proto)
            if now >= next_idle_check:
                next_idle_check = now + IDLE_TIMEOUT / 5
                cutoff = now - IDLE_TIMEOUT
                for proto in list(self.connections):
                    if not proto.busy and proto.idle_since < cutoff and proto.transport is not None:
                        proto.transport.close()

    async def drain(self, timeout: float) -> None:
        """Stop taking new requests; wait for in-flight ones (fast and handed-off)."""
        self.stopping = True
        self.fallback.pre_shutdown()
        for proto in list(self.connections):
            if not proto.busy and proto.transport is not None:
                proto.transport.close()
        deadline = self.loop.time() + timeout
        while any(p.busy for p in self.connections) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self._sweeper is not None:
            self._sweeper.cancel()
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abort()
        await self.fallback.shutdown(max(0.1, deadline - self.loop.time()))
        for pool in self.pools.values():
            pool.close()


def _expire(proto: FastProtocol) -> None:
    """Total timeout: fail the upstream exchange this connection is waiting on, drop its socket."""
    exchange = proto.exchange
    conn = proto.upstream
    if exchange is not None:
        exchange.fail(TimeoutError("upstream timeout"))
    if conn is not None:
        conn.abort()


def make_listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound, listening TCP socket (SO_REUSEPORT lets every worker bind the same port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class ProxyListener:
    """The client-facing port: the fast path in front of aiohttp's handler (or aiohttp alone)."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.fast: FastServer | None = None
        self.fallback: web.Server | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self, sock: socket.socket | None = None, *, reuse_port: bool = False) -> int:
        """Listen (on `sock` if given, else the configured address); returns the bound port."""
        config = self.core.config
        limits = config.limits
        self.fallback = web.Server(
            self.core.handle,
            # aiohttp's own parser limits sit above ours so that our checks answer 414/431;
            # anything beyond them is still rejected by aiohttp with a clean 400.
            max_line_size=limits.max_line_bytes * 2 + 64,
            max_field_size=limits.max_header_bytes * 2 + 64,
            max_headers=256,
            access_log=None,
        )
        factory: Callable[[], asyncio.BaseProtocol] = self.fallback
        if config.fast_path:
            self.fast = FastServer(self.core, self.fallback)
            self.fast.start_sweeper()
            factory = self.fast
        if sock is None:
            sock = make_listening_socket(
                config.listen_host, config.listen_port, reuse_port=reuse_port
            )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, sock=sock, backlog=1024)
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to shutdown_timeout), close all."""
        if self._server is not None:
            self._server.close()
        timeout = self.core.config.shutdown_timeout
        if self.fast is not None:
            await self.fast.drain(timeout)
        elif self.fallback is not None:
            self.fallback.pre_shutdown()
            await self.fallback.shutdown(timeout)
        self._server = None

    @property
    def handoffs(self) -> int:
        return self.fast.handoffs if self.fast is not None else 0
