"""One request/response exchange on an upstream connection, driven by callbacks or awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from strangler_proxy.breaker import CircuitBreaker
from strangler_proxy.routes import Match
from strangler_proxy.server import SMALL_RESPONSE

if TYPE_CHECKING:
    from strangler_proxy.fastpath.head import ParsedRequest
    from strangler_proxy.fastpath.protocol import FastProtocol
    from strangler_proxy.fastpath.server import FastServer

_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


class Exchange:
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
        request: ParsedRequest | None = None,
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


class UpstreamClosed(ConnectionError):
    """The upstream closed or broke the connection before the response was complete."""
