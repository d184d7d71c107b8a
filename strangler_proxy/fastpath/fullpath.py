"""The aiohttp side of the listener: a stricter parser and a guarded request handler.

Every connection the fast path hands off (and, with `fast_path = false`, every connection)
is served by `GuardedHandler`, aiohttp's `RequestHandler` with:

- `StrictRequestParser`: the request-head verdicts of `strangler_proxy.headcheck` (the same
  ones the fast path's narrower parser implies), checked on the raw request line, so a line
  aiohttp would normalise (two spaces, HTTP/0.9, HTTP/2.0) is refused with 400; an `Upgrade`
  is ignored (the request is served as plain HTTP, so what is pipelined after it is answered);
- the connection caps (`ConnectionGate`) and the header-read timeout (checked by the sweeper);
- error answers in the configured error shape, logged as one value-free line (`RejectionLog`).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.http_parser import HttpRequestParserPy, RawRequestMessage
from aiohttp.web_protocol import MAX_MSG_QUEUE_SIZE, RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from strangler_proxy.config import Limits
from strangler_proxy.errors import ErrorShape
from strangler_proxy.fastpath.admission import ConnectionGate
from strangler_proxy.headcheck import Refusal, check_headers, check_line
from strangler_proxy.logsafe import RejectionLog
from strangler_proxy.stats import Stats

log = logging.getLogger("strangler_proxy")


class HeadRefused(BadHttpMessage):
    """A request head the shared validator refused (carries the verdict)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class StrictRequestParser(HttpRequestParserPy):
    """aiohttp's pure-Python request parser, with the shared verdicts on the raw lines."""

    limits: Limits

    def parse_message(self, lines: list[bytes]) -> RawRequestMessage:
        refusal = check_line(lines[0], self.limits)
        if refusal is not None:
            raise HeadRefused(refusal)
        message = super().parse_message(lines)
        refusal = check_headers(message.raw_headers, self.limits)
        if refusal is not None:
            raise HeadRefused(refusal)
        if message.upgrade:
            message = message._replace(upgrade=False)
        return message


def _refusal_for(status: int, exc: BaseException | None) -> Refusal:
    if isinstance(exc, HeadRefused):
        return exc.refusal
    if status == 400:
        return Refusal(400, "bad_request", "malformed request")
    if status >= 500:
        return Refusal(status, "proxy_error", "the proxy could not handle this request")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return Refusal(status, phrase.lower().replace(" ", "_"), phrase)


class GuardedHandler(RequestHandler):
    """aiohttp's handler with the shared parser, caps, head timeout and value-free errors."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        limits = manager.limits
        parser = StrictRequestParser(
            self,
            kwargs["loop"],
            2**16,
            max_line_size=limits.max_line_bytes * 2 + 64,
            max_field_size=limits.max_header_bytes * 2 + 64,
            max_headers=limits.max_headers * 4 + 16,
            payload_exception=RequestPayloadError,
            auto_decompress=False,
            max_msg_queue_size=MAX_MSG_QUEUE_SIZE,
        )
        parser.limits = limits
        self._parser = parser
        self.guard = manager
        self.head_since = 0.0
        self.remote = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        if not self.guard.gate.admit(transport, self.remote):
            self._manager = None  # never started: connection_lost has nothing to undo
            return
        super().connection_made(transport)
        self.head_since = self._loop.time()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.transport is not None:
            self.guard.gate.release(self.transport)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.head_since and self._current_request is None and not self._messages:
            self.head_since = self._loop.time()
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            self.head_since = 0.0

    def head_overdue(self, cutoff: float) -> bool:
        """Waiting for a request head that started before `cutoff` (loop time)?"""
        since = self.head_since
        return bool(since) and since < cutoff and self._current_request is None

    def time_out_head(self) -> None:
        """The header-read timeout: answer 408 and close."""
        self.head_since = 0.0
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.guard.refused(self.remote, Refusal(408, "request_timeout", "request head too slow"))
        transport.write(
            self.guard.errors.response_bytes(
                408, "request_timeout", "the request head did not arrive in time", close=True
            )
        )
        self.force_close()
        transport.close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp's messages can carry request bytes; keep the class name only.
        exc = kw.get("exc_info")
        name = type(exc).__name__ if isinstance(exc, BaseException) else "error"
        self.guard.rejections.note(self.remote, 500, f"handler error ({name})")

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        refusal = _refusal_for(status, exc)
        if status >= 500 and exc is not None:
            log.error(
                "proxy error %s at %s", type(exc).__name__, _where(exc)
            )  # a bug of ours: where, never what (the message may quote input)
        self.guard.refused(self.remote, refusal)
        if request.writer is not None and request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        body = self.guard.errors.body(refusal.status, refusal.code, refusal.message)
        resp = web.Response(status=refusal.status, body=body, content_type="application/json")
        resp.force_close()
        return resp


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


class GuardedServer(web.Server):
    """aiohttp's low-level server building `GuardedHandler`s."""

    def __init__(
        self,
        handler: Any,
        *,
        limits: Limits,
        gate: ConnectionGate,
        errors: ErrorShape,
        stats: Stats,
        rejections: RejectionLog,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.gate = gate
        self.errors = errors
        self.stats = stats
        self.rejections = rejections

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    def refused(self, remote: str, refusal: Refusal) -> None:
        self.stats.incr("rejected_requests")
        self.rejections.note(remote, refusal.status, refusal.message)

    def handlers(self) -> list[GuardedHandler]:
        return [h for h in self.connections if isinstance(h, GuardedHandler)]
