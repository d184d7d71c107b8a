"""Keep-alive connections to one plain-http upstream, each parsing answers with httptools."""

from __future__ import annotations

import asyncio

import httptools

from strangler_proxy.fastpath.exchange import Exchange, UpstreamClosed
from strangler_proxy.headcheck import HOP_BY_HOP

# Response headers the upstream side looks at or drops (hop-by-hop, framing, ours).
_SPECIAL_RESPONSE = frozenset(h.encode() for h in HOP_BY_HOP) | {b"content-length", b"x-served-by"}
_IDLE_POOL = 512
#: A pooled upstream connection idle longer than this is closed rather than reused: shorter
#: than the upstream's own keep-alive (`kit up` runs gunicorn with 75 s), so the proxy never
#: writes into a connection the upstream is closing at that moment.
UPSTREAM_IDLE_S = 30.0


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream; one parser, one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.usable = False
        self.parser = httptools.HttpResponseParser(self)
        self.informational = False
        self.idle_at = 0.0
        self.drop_served_by = pool.drop_served_by

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.usable = True

    def start(self, data: bytes, exchange: Exchange) -> Exchange:
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
            self.exchange = Exchange(self.pool.loop)

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
                exchange.fail(UpstreamClosed(f"invalid response: {exc}"))
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
            exchange.fail(UpstreamClosed("upstream closed the connection"))

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
