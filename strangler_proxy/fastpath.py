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
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httptools
from aiohttp import web

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
    canary_bucket,
)

log = logging.getLogger("strangler_proxy")

_REQUEST_LINE = re.compile(rb"(GET|POST|PUT|PATCH|DELETE|OPTIONS) (/[!-\"$-~]*) HTTP/1\.1")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
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


class _Handoff(Exception):
    """The request must be served by the aiohttp path (raised before anything was sent)."""


class _Request:
    """A validated request: everything the fast path needs, as bytes where cheap."""

    __slots__ = (
        "method",
        "target",
        "path",
        "headers",
        "body",
        "keep_alive",
        "host",
        "request_id",
        "prior_xff",
        "tokens",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        path: str,
        headers: list[tuple[bytes, bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        host: bytes | None,
        request_id: bytes | None,
        prior_xff: bytes | None,
        tokens: frozenset[bytes],
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.host = host
        self.request_id = request_id
        self.prior_xff = prior_xff
        self.tokens = tokens

    def header(self, lower_name: bytes) -> bytes | None:
        for lower, _name, value in self.headers:
            if lower == lower_name:
                return value
        return None


def parse_head(head: bytes, max_line: int, max_header_bytes: int) -> tuple[Any, ...] | None:
    """Strictly validate a request head (without the final CRLFCRLF); None means hand off.

    Returns (method, target, path, headers, content_length, keep_alive, host, request_id,
    prior_xff, tokens).
    """
    if _CONTROL.search(head) is not None:
        return None
    lines = head.split(b"\r\n")
    if b"\r" in head.replace(b"\r\n", b"") or b"\n" in head.replace(b"\r\n", b""):
        return None
    first = _REQUEST_LINE.fullmatch(lines[0])
    if first is None:
        return None
    target = first.group(2)
    if len(target) > max_line:
        return None
    raw_path = target.split(b"?", 1)[0]
    if b"%" in raw_path or b"/." in raw_path:
        return None
    if len(lines) - 1 > _MAX_HEADERS:
        return None
    headers: list[tuple[bytes, bytes, bytes]] = []
    size = 0
    length: int | None = None
    host = request_id = prior_xff = None
    connection: list[bytes] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or _TOKEN.fullmatch(name) is None:
            return None
        value = value.strip(b" \t")
        size += len(name) + len(value) + 4
        lower = name.lower()
        if lower in _HANDOFF_HEADERS:
            return None
        if lower == b"content-length":
            if length is not None or _DIGITS.fullmatch(value) is None:
                return None
            length = int(value)
        elif lower == b"host":
            if host is not None:
                return None
            host = value
        elif lower == b"connection":
            connection.append(value)
        elif lower == b"x-request-id":
            if request_id is None:
                request_id = value
        elif lower == b"x-forwarded-for":
            if prior_xff is None:
                prior_xff = value
        headers.append((lower, name, value))
    if size > max_header_bytes:
        return None
    tokens: frozenset[bytes] = frozenset()
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
    return (
        first.group(1).decode(),
        target,
        raw_path.decode("ascii"),
        headers,
        length or 0,
        keep_alive,
        host,
        request_id,
        prior_xff,
        tokens,
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

    One future per exchange: `waiter` resolves when the response head is in (or fails); a
    consumer that needs the rest of the body re-arms it with `wait_complete()`.
    """

    __slots__ = (
        "loop",
        "waiter",
        "status",
        "reason",
        "headers",
        "chunks",
        "sink",
        "length_known",
        "content_length",
        "keep_alive",
        "received",
        "head_done",
        "complete",
        "error",
        "has_connection",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiter: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.sink: Callable[[bytes], None] | None = None
        self.length_known = False
        self.content_length: int | None = None
        self.keep_alive = True
        self.received = False
        self.head_done = False
        self.complete = False
        self.error: BaseException | None = None
        self.has_connection = False

    def wake(self) -> None:
        if not self.waiter.done():
            self.waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if self.complete or self.error is not None:
            return
        self.error = exc
        if not self.waiter.done():
            self.waiter.set_exception(exc)

    async def wait_complete(self) -> None:
        """Wait for the end of the body (raises what `fail` recorded)."""
        if self.complete:
            return
        if self.error is not None:
            raise self.error
        self.waiter = self.loop.create_future()
        await self.waiter


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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.usable = True

    def start(self, data: bytes) -> _Exchange:
        exchange = _Exchange(self.pool.loop)
        self.exchange = exchange
        assert self.transport is not None
        self.transport.write(data)
        return exchange

    # httptools callbacks ------------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self.exchange.reason += reason  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        self.exchange.headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: discard, the real answer follows
            self.informational = True
            exchange.headers = []
            exchange.reason = b""
            return
        exchange.status = status
        exchange.keep_alive = self.parser.should_keep_alive()
        for name, value in exchange.headers:
            lower = name.lower()
            if lower == b"content-length":
                exchange.length_known = True
                exchange.content_length = int(value) if value.isdigit() else None
            elif lower == b"transfer-encoding":
                exchange.length_known = True
            elif lower == b"connection":
                exchange.has_connection = True
        if status in (204, 304):
            exchange.length_known = True
            exchange.content_length = 0
        exchange.head_done = True
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
            exchange.fail(_UpstreamClosed(f"invalid response: {exc}"))
            self.close()

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
        self, loop: asyncio.AbstractEventLoop, host: str, port: int, connect_timeout: float
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.idle: list[UpstreamConnection] = []
        self.host_header = f"Host: {host}:{port}\r\n".encode()

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        idle = self.idle
        stale_before = self.loop.time() - UPSTREAM_IDLE_S
        while idle:
            conn = idle.pop()
            if conn.usable and conn.idle_at >= stale_before:
                return conn, True
            conn.close()
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
        "task",
        "idle_since",
        "paused",
        "upstream",
        "exchange",
        "write_paused",
    )

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closing = False
        self.remote = ""
        self.task: asyncio.Task[None] | None = None
        self.idle_since = 0.0
        self.paused = False
        self.upstream: UpstreamConnection | None = None
        self.exchange: _Exchange | None = None
        self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.server.connections.add(self)
        self.idle_since = self.server.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()

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
        self.buffer += data
        if self.busy:
            if len(self.buffer) > _HIGH_WATER and not self.paused:
                self.paused = True
                assert self.transport is not None
                self.transport.pause_reading()
            return
        self._next()

    def _next(self) -> None:
        """Start the next buffered request, hand the connection off, or wait for more bytes."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        server = self.server
        if end < 0:
            # Not a complete head yet. Shapes we never accept (bare LF, oversize) go to the
            # full parser now, so it answers them instead of us waiting for more bytes.
            if len(buffer) > server.head_cap or buffer.count(b"\n") != buffer.count(b"\r\n"):
                self._handoff()
            return
        parsed = parse_head(bytes(buffer[:end]), server.max_line, server.max_header_bytes)
        if parsed is None:
            self._handoff()
            return
        length = parsed[4]
        if length > server.max_fast_body:
            self._handoff()
            return
        start = end + 4
        if len(buffer) < start + length:
            return  # wait for the rest of the body
        method = parsed[0]
        if length == 0 and method in _BODYLESS_METHODS:
            body = b""
        else:
            body = bytes(buffer[start : start + length])
        request = _Request(
            method,
            parsed[1],
            parsed[2],
            parsed[3],
            body,
            parsed[5],
            parsed[6],
            parsed[7],
            parsed[8],
            parsed[9],
        )
        plan = server.plan(request, self.remote)
        if plan is None:
            self._handoff()
            return
        del buffer[: start + length]
        self.busy = True
        self.task = server.loop.create_task(self._serve(request, plan))

    async def _serve(self, request: _Request, plan: tuple[Match, str | None]) -> None:
        server = self.server
        try:
            keep = await server.serve(self, request, plan)
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
        self.busy = False
        self.task = None
        transport = self.transport
        assert transport is not None
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
        self.served_by = config.served_by_header
        self.preserve_host = config.preserve_host
        self.connections: set[FastProtocol] = set()
        self.stopping = False
        self.handoffs = 0
        self.pools: dict[str, UpstreamPool] = {}
        for name, base in config.upstreams.items():
            parts = urlsplit(base)
            if parts.scheme != "http" or parts.path not in ("", "/"):
                continue  # https or a base path: the aiohttp path handles these
            self.pools[name] = UpstreamPool(
                self.loop, parts.hostname or "127.0.0.1", parts.port or 80, config.timeouts.connect
            )
        self.enabled = MONOLITH in self.pools
        self._sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> asyncio.Protocol:
        if not self.enabled or self.stopping:
            return self.fallback()
        return FastProtocol(self)

    # -- routing ---------------------------------------------------------------------------
    def plan(self, request: _Request, remote: str) -> tuple[Match, str | None] | None:
        """(match, first target) or None to hand off; target None = unknown service."""
        match = self.core.table.match(request.method, request.path)
        route = match.route
        kind = match.mode.kind
        if route is None or kind == MODE_MONOLITH:
            return match, MONOLITH
        if kind == MODE_EXTRACTED:
            return self._service_plan(match, route)
        if kind == MODE_CANARY:
            if route.sticky_cookie:
                return None
            if self._canary_hit(request, route, match, remote):
                return self._service_plan(match, route)
            return match, MONOLITH
        return None  # shadow (and anything new) stays on the full-featured path

    def _service_plan(self, match: Match, route: Route) -> tuple[Match, str | None] | None:
        service = route.service
        if service not in self.core.breakers:
            return match, None
        if service not in self.pools:
            return None
        return match, service

    @staticmethod
    def _canary_hit(request: _Request, route: Route, match: Match, remote: str) -> bool:
        threshold = match.mode.threshold
        if threshold <= 0:
            return False
        if threshold >= 10000:
            return True
        key: str | None = None
        if route.sticky_header:
            raw = request.header(route.sticky_header.lower().encode())
            key = raw.decode("latin-1") if raw else None
        if not key:
            key = remote
        return canary_bucket(key) < threshold

    # -- serving ---------------------------------------------------------------------------
    async def serve(
        self, proto: FastProtocol, request: _Request, plan: tuple[Match, str | None]
    ) -> bool:
        """Answer one request; returns whether the client connection may be kept."""
        core = self.core
        started = time.perf_counter()
        core.in_flight += 1
        match, target = plan
        proxy_error = False
        try:
            head = self._upstream_head(request, proto.remote)
            if target is None:
                service = match.service
                status = 502
                proxy_error = False
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
        core.stats.observe(
            match.pattern,
            target,
            status,
            (time.perf_counter() - started) * 1000,
            proxy_error=proxy_error,
        )
        return request.keep_alive

    def _upstream_head(self, request: _Request, remote: str) -> list[bytes]:
        """Everything of the upstream request head except the Host line and final CRLF."""
        tokens = request.tokens
        out = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.target)]
        append = out.append
        for lower, name, value in request.headers:
            if lower in _REQUEST_SKIP or lower in tokens:
                continue
            append(b"%s: %s\r\n" % (name, value))
        remote_b = remote.encode()
        prior = request.prior_xff
        append(
            b"X-Forwarded-For: %s, %s\r\n" % (prior, remote_b)
            if prior
            else b"X-Forwarded-For: %s\r\n" % remote_b
        )
        append(b"X-Forwarded-Proto: http\r\n")
        host = request.host
        if host:
            append(b"X-Forwarded-Host: %s\r\n" % host)
        if request.request_id is None:
            append(b"X-Request-ID: %s\r\n" % os.urandom(16).hex().encode())
        if request.body or request.method not in _BODYLESS_METHODS:
            append(b"Content-Length: %d\r\n" % len(request.body))
        return out

    def _host_line(self, request: _Request, target: str) -> bytes:
        if self.preserve_host and request.host:
            return b"Host: %s\r\n" % request.host
        return self.pools[target].host_header

    async def _send(
        self, proto: FastProtocol, request: _Request, head: list[bytes], target: str
    ) -> tuple[UpstreamConnection, _Exchange]:
        """Send the request and wait for the response head (retry once on a stale socket)."""
        pool = self.pools[target]
        data = b"".join((head[0], self._host_line(request, target), *head[1:], b"\r\n"))
        if request.body:
            data += request.body
        for attempt in (0, 1):
            try:
                conn, reused = await pool.acquire()
            except TimeoutError as exc:
                raise UpstreamFailure(True, f"{target} did not answer in time") from exc
            except OSError as exc:
                raise UpstreamFailure(
                    False, f"{target} unreachable: {exc.__class__.__name__}"
                ) from exc
            exchange = conn.start(data)
            proto.exchange = exchange
            proto.upstream = conn
            try:
                await exchange.waiter
            except TimeoutError as exc:
                conn.abort()
                raise UpstreamFailure(True, f"{target} did not answer in time") from exc
            except _UpstreamClosed as exc:
                conn.abort()
                if (
                    attempt == 0
                    and reused
                    and not exchange.received
                    and request.method in IDEMPOTENT_METHODS
                ):
                    continue
                raise UpstreamFailure(
                    False, f"{target} unreachable: {exc.__class__.__name__}"
                ) from exc
            except BaseException:
                conn.abort()
                raise
            return conn, exchange
        raise AssertionError("unreachable")  # pragma: no cover

    def _response_head(
        self, exchange: _Exchange, target: str, framing: bytes, close: bool
    ) -> bytes:
        tokens: frozenset[bytes] = frozenset()
        headers = exchange.headers
        if exchange.has_connection:
            tokens = frozenset(
                t.strip().lower()
                for name, value in headers
                if name.lower() == b"connection"
                for t in value.split(b",")
                if t.strip()
            )
        out = [b"HTTP/1.1 %d %s\r\n" % (exchange.status, exchange.reason)]
        append = out.append
        served_by = self.served_by
        for name, value in headers:
            lower = name.lower()
            if lower in _RESPONSE_SKIP or lower in tokens:
                continue
            if served_by and lower == b"x-served-by":
                continue
            append(b"%s: %s\r\n" % (name, value))
        if served_by:
            append(b"X-Served-By: %s\r\n" % target.encode())
        append(framing)
        if close:
            append(b"Connection: close\r\n")
        append(b"\r\n")
        return b"".join(out)

    async def _forward(
        self, proto: FastProtocol, request: _Request, head: list[bytes], target: str, match: Match
    ) -> tuple[int, bool]:
        """Send to `target` and relay its answer; (status the client saw, proxy error?)."""
        timer = self.loop.call_later(self.total_timeout, _expire, proto)
        try:
            try:
                conn, exchange = await self._send(proto, request, head, target)
            except UpstreamFailure as failure:
                return self._write_failure(proto, request, failure, match, target), True
            return await self._relay(proto, request, conn, exchange, target, match)
        finally:
            timer.cancel()

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
        clean = False
        try:
            length = exchange.content_length
            if exchange.complete or (
                length is not None and exchange.length_known and length <= SMALL_RESPONSE
            ):
                try:
                    await exchange.wait_complete()
                except (_UpstreamClosed, TimeoutError) as exc:
                    timeout = isinstance(exc, TimeoutError)
                    failure = UpstreamFailure(
                        timeout,
                        f"{target} timed out while sending its body"
                        if timeout
                        else f"{target} failed while sending its body: {exc.__class__.__name__}",
                    )
                    return self._write_failure(proto, request, failure, match, target), True
                body = b"".join(exchange.chunks) if exchange.chunks else b""
                if exchange.status in (204, 304):
                    framing = b""
                else:
                    framing = b"Content-Length: %d\r\n" % len(body)
                transport.write(self._response_head(exchange, target, framing, close) + body)
                clean = True
                return exchange.status, False
            # Streaming: large or unknown length.
            chunked = not exchange.length_known or length is None
            framing = (
                b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % length
            )
            transport.write(self._response_head(exchange, target, framing, close))
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
        timer = self.loop.call_later(self.total_timeout, _expire, proto)
        try:
            if can_fallback and not breaker.allow():
                core.stats.incr("breaker_short_circuits")
                timer.cancel()
                status, err = await self._forward(proto, request, head, MONOLITH, match)
                return MONOLITH, status, err
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
                timer.cancel()
                status, err = await self._forward(proto, request, head, MONOLITH, match)
                return MONOLITH, status, err
            if exchange.status >= 500:
                breaker.record_failure()
                if can_fallback:
                    conn.abort()
                    core.stats.incr("fallbacks")
                    timer.cancel()
                    status, err = await self._forward(proto, request, head, MONOLITH, match)
                    return MONOLITH, status, err
            else:
                breaker.record_success()
            status, err = await self._relay(proto, request, conn, exchange, service, match)
            return service, status, err
        finally:
            timer.cancel()

    # -- lifecycle -------------------------------------------------------------------------
    def start_sweeper(self) -> None:
        """Idle keep-alive connections are closed by one periodic sweep, not a timer each."""
        self._sweeper = self.loop.create_task(self._sweep(), name="fastpath-idle-sweeper")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(IDLE_TIMEOUT / 5)
            cutoff = self.loop.time() - IDLE_TIMEOUT
            for proto in list(self.connections):
                if not proto.busy and proto.idle_since < cutoff and proto.transport is not None:
                    proto.transport.close()

    async def drain(self, timeout: float) -> None:
        """Stop taking new requests; wait for in-flight ones (fast and handed-off)."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.fallback.pre_shutdown()
        for proto in list(self.connections):
            if not proto.busy and proto.transport is not None:
                proto.transport.close()
        deadline = self.loop.time() + timeout
        while any(p.busy for p in self.connections) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abort()
        await self.fallback.shutdown(max(0.1, deadline - self.loop.time()))
        for pool in self.pools.values():
            pool.close()


def _expire(proto: FastProtocol) -> None:
    """Total timeout: fail the upstream exchange this connection is waiting on, drop its socket."""
    exchange = proto.exchange
    if exchange is not None:
        exchange.fail(TimeoutError("upstream timeout"))
    conn = proto.upstream
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
