"""The fast path's request logic: routing, and the callback flow for warm connections.

Why two flows: most requests find a warm pooled upstream connection and get a small answer.
Those are driven by plain callbacks (client `data_received` -> upstream write; upstream
`data_received` -> one client write): no Task, no Future, no timer per request, which is most
of what a request costs in Python. Everything else - a new upstream connection, fallback
routes, streamed answers, retries after a stale socket - runs the coroutine path
(`strangler_proxy.fastpath.relay`), which the callback flow hands over to at any of those
points. Timeouts are deadlines checked by the sweeper, not a timer per request.
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import urlsplit

from strangler_proxy.breaker import CircuitBreaker
from strangler_proxy.fastpath.exchange import Exchange, UpstreamClosed
from strangler_proxy.fastpath.fullpath import GuardedServer
from strangler_proxy.fastpath.head import ParsedRequest
from strangler_proxy.fastpath.protocol import HAND_OFF, FastProtocol
from strangler_proxy.fastpath.relay import CoroutinePath
from strangler_proxy.fastpath.upstream import UpstreamConnection, UpstreamPool
from strangler_proxy.headcheck import SMALL_BODY
from strangler_proxy.routes import IDEMPOTENT_METHODS, MONOLITH, Match
from strangler_proxy.server import ProxyCore, UpstreamFailure


class FastServer(CoroutinePath):
    """Protocol factory + request logic of the fast path, bound to one ProxyCore."""

    def __init__(self, core: ProxyCore, fallback: GuardedServer) -> None:
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
        self.max_headers = limits.max_headers
        self.gate = fallback.gate  # one count of connections for both paths
        self.rejections = fallback.rejections
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
        # X-Request-ID: a random per-process prefix and a counter (unique, and cheap).
        self._id_prefix = os.urandom(8).hex().encode()
        self._id_counter = 0

    def __call__(self) -> asyncio.Protocol:
        if not self.enabled or self.stopping:
            return self.fallback()
        return FastProtocol(self)

    # -- routing ---------------------------------------------------------------------------
    def plan(self, request: ParsedRequest, match: Match, remote: str) -> str | None:
        """The first target for a declared route, decided by `ProxyCore.decide` as on the
        aiohttp path: a name, None for a service this proxy does not know, or `HAND_OFF`
        (shadow copies, held routes and https upstreams are the aiohttp path's)."""
        decision = self.core.decide(match, request.method, request.header, remote, record=False)
        request.decision = decision
        target = decision.target
        known = target != MONOLITH and target in self.core.breakers
        if decision.shadow or decision.held or (known and target not in self.pools):
            return HAND_OFF  # the aiohttp path decides (and records) this request again
        self.core.record(match, decision)
        if target == MONOLITH:
            return MONOLITH
        if target not in self.core.breakers:
            return None
        return target

    # -- serving: the callback flow ----------------------------------------------------------
    def begin(
        self, proto: FastProtocol, request: ParsedRequest, match: Match, target: str | None
    ) -> None:
        """Start answering `request`: by callbacks when a warm upstream connection is at hand
        and the route needs no fallback, else on the coroutine path."""
        breaker: CircuitBreaker | None = None
        if target == MONOLITH:
            pool = self.monolith
        elif target is None or request.decision.fallback:  # type: ignore[union-attr]
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
            data, Exchange(self.loop, self, proto, request, match, target, breaker, started)
        )
        proto.exchange = exchange
        proto.upstream = conn
        proto.deadline = now + self.total_timeout

    def head(self, conn: UpstreamConnection, exchange: Exchange) -> None:
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
        self, proto: FastProtocol, conn: UpstreamConnection, exchange: Exchange
    ) -> bool:
        """The rest of a callback-started exchange whose answer must be streamed."""
        request, match, target = exchange.request, exchange.match, exchange.target
        assert request is not None and match is not None
        try:
            status, proxy_error = await self._relay(proto, request, conn, exchange, target, match)
        finally:
            self.core.in_flight -= 1
            proto.deadline = 0.0
        self._observe(request, match, target, status, exchange.started, proxy_error)
        return request.keep_alive

    def deliver(self, conn: UpstreamConnection, exchange: Exchange) -> None:
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
        self._observe(request, match, target, exchange.status, exchange.started, False)
        proto.settle(request.keep_alive)

    def failed(self, exchange: Exchange, exc: BaseException) -> None:
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
            isinstance(exc, UpstreamClosed)
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
        self._observe(request, match, target, status, exchange.started, True)
        proto.settle(request.keep_alive)

    def _observe(
        self,
        request: ParsedRequest,
        match: Match,
        target: str,
        status: int,
        started: float,
        proxy_error: bool,
    ) -> None:
        decision = request.decision
        if decision is not None and decision.pin_key is not None:
            self.core.served(match, decision, target)
        self.core.stats.observe(
            match.pattern,
            target,
            status,
            (time.perf_counter() - started) * 1000,
            proxy_error=proxy_error,
        )

    # -- lifecycle -------------------------------------------------------------------------
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
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abort()
        await self.fallback.shutdown(max(0.1, deadline - self.loop.time()))
        for pool in self.pools.values():
            pool.close()
