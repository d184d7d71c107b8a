"""The client side of the fast path: one asyncio.Protocol per client connection.

It reads request heads, starts each validated request on the FastServer, and gives the
connection with every byte read so far to the aiohttp path (`_handoff`) when a request needs
what the fast path does not do. Back-pressure both ways: reading pauses while a pipelining
client's next requests pile up, and no next request starts while the client is not reading
the answers already sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from strangler_proxy.fastpath.exchange import Exchange
from strangler_proxy.fastpath.head import parse_head
from strangler_proxy.fastpath.upstream import UpstreamConnection
from strangler_proxy.routes import MONOLITH

if TYPE_CHECKING:
    from strangler_proxy.fastpath.server import FastServer

log = logging.getLogger("strangler_proxy")

HIGH_WATER = 256 * 1024  # pause reading a client that pipelines more than this while busy
HAND_OFF = ""  # FastServer.plan: this request goes to the aiohttp path


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
        "head_since",
        "held",
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
        self.exchange: Exchange | None = None
        self.write_paused = False
        self.deadline = 0.0  # loop time the current upstream exchange times out (0: none)
        self.head_since = 0.0  # loop time the head being read started (0: none is)
        self.held = False  # answers are not being read: no next request until they are

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.remote_b = self.remote.encode()
        self.xff_line = b"X-Forwarded-For: %s\r\n" % self.remote_b
        server = self.server
        if not server.gate.admit(transport, self.remote):  # type: ignore[arg-type]
            return
        server.connections.add(self)
        self.idle_since = self.head_since = server.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.transport is not None:
            self.server.gate.release(self.transport)
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
        if self.held:
            self.held = False
            self.paused = False
            if self.transport is not None and not self.closing:
                self.transport.resume_reading()
                if not self.busy:
                    self._next()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        if self.busy or self.held:
            buffer += data
            if len(buffer) > HIGH_WATER and not self.paused:
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
            if not self.head_since:
                self.head_since = server.loop.time()
            # Not a complete head yet. Shapes we never accept (bare LF, oversize) go to the
            # full parser now, so it answers them instead of us waiting for more bytes.
            if len(data) > server.head_cap or data.count(b"\n") != data.count(b"\r\n"):
                self._handoff()
            return
        request = parse_head(
            data[:end],
            server.max_line,
            server.max_header_bytes,
            server.max_headers,
            server.max_fast_body,
        )
        if request is None:
            self.buffer += data
            self._handoff()
            return
        stop = end + 4 + request.length
        if len(data) < stop:
            self.buffer += data
            return  # wait for the rest of the body
        if request.length:
            request.body = data[end + 4 : stop]
        self.head_since = 0.0
        match = server.core.table.match(request.method, request.path)
        target = MONOLITH if match.route is None else server.plan(request, match, self.remote)
        if target == HAND_OFF:
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
        if self.write_paused:
            # The client is not reading its answers: read nothing more from it until it does
            # (resume_writing goes on), so what one connection holds stays bounded.
            self.held = True
            if not self.paused:
                self.paused = True
                transport.pause_reading()
            return
        if self.paused:
            self.paused = False
            transport.resume_reading()
        self.idle_since = server.loop.time()
        if self.buffer:
            self._next()

    def time_out_head(self) -> None:
        """The header-read timeout: answer 408 and close."""
        self.head_since = 0.0
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        core = self.server.core
        core.stats.incr("rejected_requests")
        self.server.rejections.note(self.remote, 408, "request head too slow")
        transport.write(
            core.errors.response_bytes(
                408, "request_timeout", "the request head did not arrive in time", close=True
            )
        )
        self.closing = True
        transport.close()

    def _handoff(self) -> None:
        """Give this connection, and every byte read so far, to aiohttp's request handler."""
        transport = self.transport
        assert transport is not None
        self.server.connections.discard(self)
        if self.paused or self.held:
            self.paused = self.held = False
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
