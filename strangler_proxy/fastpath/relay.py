"""The fast path's coroutine flow: connect, send, wait, relay (whole or streamed), fall back.

A mixin of `FastServer` (it uses the server's pools, core and settings): requests that need a
new upstream connection, a fallback, a streamed answer or a retry after a stale pooled
socket are answered here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from strangler_proxy.fastpath.exchange import Exchange, UpstreamClosed
from strangler_proxy.fastpath.head import REQUEST_SKIP, ParsedRequest
from strangler_proxy.fastpath.upstream import UpstreamConnection, UpstreamPool
from strangler_proxy.reconnect import connect_retrying
from strangler_proxy.routes import IDEMPOTENT_METHODS, MONOLITH, Match
from strangler_proxy.server import UpstreamFailure

if TYPE_CHECKING:
    from strangler_proxy.fastpath.protocol import FastProtocol
    from strangler_proxy.server import ProxyCore

BODYLESS_METHODS = frozenset({"GET", "DELETE", "OPTIONS"})


class CoroutinePath:
    """Request answering on the coroutine path (see the module docstring)."""

    core: ProxyCore
    loop: asyncio.AbstractEventLoop
    pools: dict[str, UpstreamPool]
    served_by_lines: dict[str, bytes | None]
    total_timeout: float
    preserve_host: bool
    _id_prefix: bytes
    _id_counter: int

    _observe: Callable[[ParsedRequest, Match, str, int, float, bool], None]

    async def serve(
        self, proto: FastProtocol, request: ParsedRequest, match: Match, target: str | None
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
                    core.errors.response_bytes(
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
        self._observe(request, match, target, status, started, proxy_error)
        return request.keep_alive

    def _upstream_head(self, request: ParsedRequest, proto: FastProtocol) -> list[bytes]:
        """The header lines sent upstream, but for Host (it depends on the upstream: see
        `_wire`, which joins the whole request; a fallback reuses these lines)."""
        out: list[bytes] = []
        append = out.append
        tokens = request.tokens
        for lower, name, value in request.headers:
            if lower in REQUEST_SKIP or lower in tokens:
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
        if request.body or request.method not in BODYLESS_METHODS:
            append(b"Content-Length: %d\r\n" % len(request.body))
        return out

    def _host_line(self, request: ParsedRequest, pool: UpstreamPool) -> bytes:
        if self.preserve_host and request.host:
            return b"Host: %s\r\n" % request.host
        return pool.host_header

    def _wire(self, request: ParsedRequest, head: list[bytes], pool: UpstreamPool) -> bytes:
        """The request as sent to `pool`'s upstream: request line, Host, `head`, body."""
        host = self._host_line(request, pool)
        return b"".join((request.line, host, *head, b"\r\n", request.body))

    async def _send(
        self, proto: FastProtocol, request: ParsedRequest, head: list[bytes], target: str
    ) -> tuple[UpstreamConnection, Exchange]:
        """Send the request and wait for the response head (retry once on a stale socket)."""
        pool = self.pools[target]
        data = self._wire(request, head, pool)
        for attempt in (0, 1):
            try:
                conn, reused = await connect_retrying(
                    pool.acquire,
                    self.core.config.timeouts.connect_retry,
                    refused=lambda exc: isinstance(exc, ConnectionRefusedError),
                    on_retry=lambda: self.core.stats.incr("connect_retries"),
                )
            except OSError as exc:  # the connect timeout (TimeoutError) included
                raise UpstreamFailure.of(target, exc) from exc
            exchange = conn.start(data, Exchange(self.loop))
            proto.exchange = exchange
            proto.upstream = conn
            try:
                await exchange.wait_head()
            except TimeoutError as exc:
                conn.abort()
                raise UpstreamFailure.of(target, exc) from exc
            except UpstreamClosed as exc:
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
        self,
        proto: FastProtocol,
        request: ParsedRequest,
        head: list[bytes],
        target: str,
        match: Match,
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
        request: ParsedRequest,
        conn: UpstreamConnection,
        exchange: Exchange,
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
                except (UpstreamClosed, TimeoutError) as exc:
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
            except (UpstreamClosed, TimeoutError) as exc:
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
        request: ParsedRequest,
        failure: UpstreamFailure,
        match: Match,
        target: str,
    ) -> int:
        status, code = failure.status_code()
        assert proto.transport is not None
        proto.transport.write(
            self.core.errors.response_bytes(
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
        request: ParsedRequest,
        head: list[bytes],
        service: str,
        match: Match,
    ) -> tuple[str, int, bool]:
        """The service first, under its breaker; the monolith on failure when the decision
        allows a fallback (`ProxyCore._to_service` does the same on the aiohttp path)."""
        core = self.core
        breaker = core.breakers[service]
        assert request.decision is not None
        can_fallback = request.decision.fallback
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
