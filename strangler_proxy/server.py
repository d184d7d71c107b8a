"""The proxying hot path: match, pick a target by mode, forward, stream back.

Built on aiohttp's low-level `web.Server` (no router, no middlewares) and one pooled
`ClientSession` per purpose (live traffic and shadow copies use separate connection pools, so
shadow load can never starve client traffic of upstream connections).

Only upstreams named in the configuration are contacted: the upstream URL is always
`<configured base URL> + <origin-form request target>`, and anything that is not origin-form
(absolute-form, authority-form, `*`, CONNECT) is refused before routing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from strangler_proxy.breaker import CircuitBreaker
from strangler_proxy.config import ProxyConfig
from strangler_proxy.errors import ErrorShape
from strangler_proxy.headcheck import HOP_BY_HOP, REQUEST_DROP, SMALL_BODY, Refusal, too_large
from strangler_proxy.policy import Decision, HeaderGetter, RywPins, decide, sticky_name
from strangler_proxy.reconnect import connect_retrying
from strangler_proxy.routes import MONOLITH, Match, Route, RouteTable
from strangler_proxy.shadow import (
    RecordedRequest,
    RecordedResponse,
    ShadowJudge,
    ShadowSink,
    redact_headers,
)
from strangler_proxy.shadow_dispatch import Capture, ShadowDispatcher, ShadowJob
from strangler_proxy.stats import Stats

log = logging.getLogger("strangler_proxy")

_RESPONSE_DROP = HOP_BY_HOP
SMALL_RESPONSE = 256 * 1024  # responses with a known length up to this are read whole
SHADOW_HEADER = "X-Strangler-Shadow"
HOLD_POLL_S = 0.01  # how often a held request looks for the route version that releases it


class UpstreamFailure(Exception):
    """The upstream could not be reached or timed out before answering."""

    def __init__(self, timeout: bool, detail: str) -> None:
        super().__init__(detail)
        self.timeout = timeout
        self.detail = detail

    @classmethod
    def of(cls, target: str, exc: BaseException, *, in_body: bool = False) -> UpstreamFailure:
        """The failure `exc` means (a TimeoutError is a timeout), met while waiting for
        `target`'s answer, or (`in_body`) while it was sending its body."""
        timeout = isinstance(exc, TimeoutError)
        if in_body:
            if timeout:
                return cls(True, f"{target} timed out while sending its body")
            return cls(False, f"{target} failed while sending its body: {type(exc).__name__}")
        if timeout:
            return cls(True, f"{target} did not answer in time")
        return cls(False, f"{target} unreachable: {type(exc).__name__}")

    def status_code(self) -> tuple[int, str]:
        """The status and error code the client gets (both paths)."""
        return (504, "upstream_timeout") if self.timeout else (502, "upstream_unavailable")


class BodyTooLarge(Exception):
    """The request body exceeded the configured limit while being read."""


def raw_header_getter(raw_headers: tuple[tuple[bytes, bytes], ...]) -> HeaderGetter:
    """`policy.decide`'s header reader over aiohttp's raw header pairs."""

    def get(lower: bytes) -> bytes | None:
        for name, value in raw_headers:
            if name.lower() == lower:
                return value
        return None

    return get


def _connection_tokens(headers: Any) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


class _BodyStream:
    """Async iterator over the client body that enforces the size limit while streaming."""

    def __init__(self, request: web.BaseRequest, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.too_large = False
        self.started = False  # a byte of the body was read (so it cannot be sent again)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        seen = 0
        async for chunk in self.request.content.iter_chunked(65536):
            seen += len(chunk)
            if seen > self.limit:
                self.too_large = True
                raise BodyTooLarge()
            yield chunk


class ProxyCore:
    """Routes and forwards client requests; the route table is swapped as a whole."""

    def __init__(
        self,
        config: ProxyConfig,
        table: RouteTable,
        stats: Stats,
        sink: ShadowSink,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        judge: ShadowJudge | None = None,
    ) -> None:
        self.config = config
        self.table = table
        self.stats = stats
        self.clock = clock
        self.wall_clock = wall_clock
        self.bases = dict(config.upstreams)
        self.breakers = {name: CircuitBreaker(config.breaker, clock) for name in config.upstreams}
        self.session: aiohttp.ClientSession | None = None
        self.shadow = ShadowDispatcher(
            config, sink, stats, self._make_session, judge, clock=clock, wall_clock=wall_clock
        )
        self.limits = config.limits
        self.in_flight = 0
        self.errors = ErrorShape(config.error_template)
        self.client_key = config.client_key
        self.pins = RywPins(config.ryw_window_s, config.ryw_max_clients)

    def json_error(self, status: int, code: str, message: str, **extra: Any) -> web.Response:
        """The proxy's own error, in the configured shape (route/service when known)."""
        body = self.errors.body(status, code, message, **extra)
        return web.Response(status=status, body=body, content_type="application/json")

    def refuse(self, refusal: Refusal) -> web.Response:
        """A request-head verdict (see strangler_proxy/headcheck.py) as a closing response."""
        self.stats.incr("rejected_requests")
        resp = self.json_error(refusal.status, refusal.code, refusal.message)
        resp.force_close()
        return resp

    def decide(
        self, match: Match, method: str, header: HeaderGetter, remote: str, *, record: bool = True
    ) -> Decision:
        """`policy.decide` with this proxy's client key, pins and clock (both paths call it).

        `record=False`: the caller calls `record` itself once it knows this path serves the
        request (the fast path, which may hand the request to the aiohttp path to decide again).
        """
        decision = decide(match, method, header, remote, self.client_key, self.pins, self.clock())
        if record:
            self.record(match, decision)
        return decision

    def record(self, match: Match, decision: Decision) -> None:
        """Count a decision once per request: pinned reads, skipped shadows, canary splits."""
        if decision.pinned:
            self.stats.incr("ryw_pinned_reads")
        elif decision.shadow_skipped:
            self.stats.incr("shadow_skipped_unsafe")
        if decision.bucket >= 0:
            route = match.route
            assert route is not None
            threshold = route.mode.threshold
            split = self.stats.canaries.get((match.pattern, threshold))
            if split is None:
                key = sticky_name(route, self.client_key)
                split = self.stats.canary(match.pattern, threshold, key)
            split.observe(decision.target != MONOLITH, decision.bucket, decision.by_address)

    def served(self, match: Match, decision: Decision, side: str) -> None:
        """Note which side served a write, for the client's reads that follow."""
        if decision.pin_key is not None and match.route is not None:
            self.pins.record(match.route.service, decision.pin_key, side, self.clock())
            self.stats.incr("ryw_writes_pinned")

    # -- lifecycle -----------------------------------------------------------------------
    def _make_session(self) -> aiohttp.ClientSession:
        timeouts = self.config.timeouts
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=256,
            keepalive_timeout=30,
            ttl_dns_cache=300,
            enable_cleanup_closed=False,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            trust_env=False,
        )

    async def start(self) -> None:
        self.session = self._make_session()
        await self.shadow.start()

    async def stop(self) -> None:
        await self.shadow.stop()
        if self.session is not None:
            await self.session.close()
            self.session = None

    def swap_table(self, table: RouteTable) -> None:
        """Atomic: requests already running keep the table object they started with."""
        self.table = table

    # -- entry point ---------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """aiohttp low-level handler."""
        started = time.perf_counter()
        self.in_flight += 1
        try:
            return await self._handle(request, started)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: web.BaseRequest, started: float) -> web.StreamResponse:
        # The request head was checked by the parser (headcheck.StrictRequestParser).
        method = request.method
        match = self.table.match(method, request.path)
        header, remote = raw_header_getter(request.raw_headers), request.remote or ""
        decision = self.decide(match, method, header, remote)
        if decision.held:
            released = await self._await_release(method, request.path, header, remote)
            if released is None:
                resp = self.json_error(
                    503,
                    "write_cutover",
                    f"writes of {match.pattern} are held for a write cut-over that did not end "
                    f"within {self.config.hold_limit_s:g}s; nothing was forwarded, retry",
                    route=match.pattern,
                )
                resp.headers["Retry-After"] = "1"
                self.stats.observe(match.pattern, "-", 503, 0.0, proxy_error=True)
                return resp
            match, decision = released
        headers = self._upstream_headers(request)
        target = decision.target
        try:
            if decision.shadow:
                resp = await self._shadowed(request, match.route, headers, match, started)  # type: ignore[arg-type]
            elif target == MONOLITH:
                resp = await self._simple(request, MONOLITH, headers, match)
            else:
                target, resp = await self._to_service(request, decision, headers, match)
        except BodyTooLarge:
            target = "-"
            resp = self.refuse(too_large(self.limits))
        self.served(match, decision, target)
        latency = (time.perf_counter() - started) * 1000
        self.stats.observe(
            match.pattern,
            target,
            resp.status,
            latency,
            proxy_error=getattr(resp, "_proxy_error", False),
        )
        return resp

    async def _await_release(
        self, method: str, path: str, header: HeaderGetter, remote: str
    ) -> tuple[Match, Decision] | None:
        """Wait while the request's route is held for a write cut-over (kit's `writes` step
        and its rollback: neither side may take a write while CDC brings the new owner up to
        date). Returns the match and decision under the route version that released it, or
        None when the hold outlasted `hold_limit_s`. Nothing of the request was forwarded."""
        self.stats.incr("held_requests")
        deadline = time.monotonic() + self.config.hold_limit_s
        while time.monotonic() < deadline:
            await asyncio.sleep(HOLD_POLL_S)
            match = self.table.match(method, path)
            decision = self.decide(match, method, header, remote, record=False)
            if not decision.held:
                self.record(match, decision)  # counted once, under the releasing version
                return match, decision
        self.stats.incr("held_expired")
        return None

    # -- headers -------------------------------------------------------------------------
    def _upstream_headers(self, request: web.BaseRequest) -> CIMultiDict[str]:
        incoming = request.headers
        tokens = _connection_tokens(incoming)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in incoming.items():
            lower = name.lower()
            if lower in REQUEST_DROP or lower in tokens:
                continue
            out.add(name, value)
        remote = request.remote or ""
        prior = None if "x-forwarded-for" in tokens else incoming.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
        out["X-Forwarded-Proto"] = request.scheme
        host = incoming.get("Host")
        if host:
            out["X-Forwarded-Host"] = host
            if self.config.preserve_host:
                out["Host"] = host
        if "X-Request-ID" not in out:
            out["X-Request-ID"] = uuid.uuid4().hex
        return out

    def _response_headers(
        self, upstream: aiohttp.ClientResponse, target: str, keep_length: bool
    ) -> CIMultiDict[str]:
        tokens = _connection_tokens(upstream.headers)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in upstream.headers.items():
            lower = name.lower()
            if lower in _RESPONSE_DROP or lower in tokens:
                continue
            if lower == "content-length" and not keep_length:
                continue
            out.add(name, value)
        if self.config.served_by_header:
            out["X-Served-By"] = target
        return out

    # -- bodies --------------------------------------------------------------------------
    @staticmethod
    async def _continue(request: web.BaseRequest) -> None:
        """A client waiting for `100 Continue` gets it once the proxy is about to read the body
        (the proxy answers Expect itself; headcheck refused any other expectation)."""
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == (
            "100-continue"
        ):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        if not request.body_exists:
            return b""
        limit = self.limits.max_body_bytes
        data = bytearray()
        async for chunk in request.content.iter_chunked(65536):
            data += chunk
            if len(data) > limit:
                raise BodyTooLarge()
        return bytes(data)

    async def _body_for(self, request: web.BaseRequest, buffer: bool) -> Any:
        """bytes when small or when a replay may be needed, else a limited stream."""
        if not request.body_exists:
            return None
        await self._continue(request)
        length = request.content_length
        if buffer or (length is not None and length <= SMALL_BODY):
            return await self._read_body(request)
        return _BodyStream(request, self.limits.max_body_bytes)

    # -- sending and relaying ------------------------------------------------------------
    async def _send(
        self, request: web.BaseRequest, target: str, headers: CIMultiDict[str], body: Any
    ) -> aiohttp.ClientResponse:
        assert self.session is not None
        url = URL(self.bases[target] + request.raw_path, encoded=True)
        session = self.session

        def refused(exc: BaseException) -> bool:  # at connect: no byte of the request went out
            unsent = not (isinstance(body, _BodyStream) and body.started)
            return (
                unsent
                and isinstance(exc, aiohttp.ClientConnectorError)
                and isinstance(exc.os_error, ConnectionRefusedError)
            )

        def attempt() -> Any:
            data = body.__aiter__() if isinstance(body, _BodyStream) else body
            return session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            )

        try:
            return await connect_retrying(
                attempt,
                self.config.timeouts.connect_retry,
                refused,
                on_retry=lambda: self.stats.incr("connect_retries"),
            )
        except BodyTooLarge:
            raise
        except TimeoutError as exc:
            raise UpstreamFailure.of(target, exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            if isinstance(body, _BodyStream) and body.too_large:
                raise BodyTooLarge() from exc
            raise UpstreamFailure.of(target, exc) from exc

    async def _relay(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        target: str,
        capture: Capture | None = None,
    ) -> web.StreamResponse:
        """Copy the upstream response to the client: whole if small, else streamed."""
        try:
            length = upstream.content_length
            if request.method == "HEAD" or upstream.status in (204, 304):
                headers = self._response_headers(upstream, target, keep_length=True)
                await upstream.read()
                resp = web.StreamResponse(
                    status=upstream.status, reason=upstream.reason, headers=headers
                )
                await resp.prepare(request)
                await resp.write_eof()
                return resp
            if length is not None and length <= SMALL_RESPONSE:
                body = await upstream.read()
                if capture is not None:
                    capture.add(body)
                headers = self._response_headers(upstream, target, keep_length=False)
                return web.Response(
                    status=upstream.status, reason=upstream.reason, headers=headers, body=body
                )
            headers = self._response_headers(upstream, target, keep_length=True)
            resp = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=headers
            )
            await resp.prepare(request)
            async for chunk in upstream.content.iter_chunked(65536):
                if capture is not None:
                    capture.add(chunk)
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise UpstreamFailure.of(target, exc, in_body=True) from exc
        finally:
            upstream.release()

    def _failure_response(
        self, failure: UpstreamFailure, match: Match, target: str
    ) -> web.Response:
        status, code = failure.status_code()
        resp = self.json_error(status, code, failure.detail, route=match.pattern, service=target)
        resp._proxy_error = True  # type: ignore[attr-defined]
        return resp

    async def _forward(
        self,
        request: web.BaseRequest,
        target: str,
        headers: CIMultiDict[str],
        body: Any,
        match: Match,
        capture: Capture | None = None,
    ) -> web.StreamResponse:
        try:
            upstream = await self._send(request, target, headers, body)
        except UpstreamFailure as failure:
            return self._failure_response(failure, match, target)
        return await self._relay_or_abort(request, upstream, target, match, capture)

    async def _relay_or_abort(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        target: str,
        match: Match,
        capture: Capture | None = None,
    ) -> web.StreamResponse:
        try:
            return await self._relay(request, upstream, target, capture)
        except UpstreamFailure as failure:
            if request.writer is not None and request.writer.output_size > 0:
                # Headers already went out: the only honest signal left is to cut the
                # connection so the client sees a truncated response, not a complete one.
                raise ConnectionResetError(failure.detail) from failure
            return self._failure_response(failure, match, target)

    async def _simple(
        self, request: web.BaseRequest, target: str, headers: CIMultiDict[str], match: Match
    ) -> web.StreamResponse:
        body = await self._body_for(request, buffer=False)
        return await self._forward(request, target, headers, body, match)

    # -- modes ---------------------------------------------------------------------------
    async def _to_service(
        self, request: web.BaseRequest, decision: Decision, headers: CIMultiDict[str], match: Match
    ) -> tuple[str, web.StreamResponse]:
        service = decision.target
        can_fallback = decision.fallback
        breaker = self.breakers.get(service)
        if breaker is None:  # route names a service that is not configured here
            return service, self.json_error(
                502,
                "upstream_unavailable",
                f"service {service!r} is not configured on this proxy",
                route=match.pattern,
                service=service,
            )
        if not can_fallback:
            body = await self._body_for(request, buffer=False)
            try:
                upstream = await self._send(request, service, headers, body)
            except UpstreamFailure as failure:
                breaker.record_failure()
                return service, self._failure_response(failure, match, service)
            if upstream.status >= 500:
                breaker.record_failure()
            else:
                breaker.record_success()
            return service, await self._relay_or_abort(request, upstream, service, match)
        body = await self._body_for(request, buffer=True)
        if not breaker.allow():
            self.stats.incr("breaker_short_circuits")
            return MONOLITH, await self._forward(request, MONOLITH, headers, body, match)
        try:
            upstream = await self._send(request, service, headers, body)
        except UpstreamFailure:
            breaker.record_failure()
            self.stats.incr("fallbacks")
            return MONOLITH, await self._forward(request, MONOLITH, headers, body, match)
        if upstream.status >= 500:
            breaker.record_failure()
            upstream.release()
            self.stats.incr("fallbacks")
            return MONOLITH, await self._forward(request, MONOLITH, headers, body, match)
        breaker.record_success()
        return service, await self._relay_or_abort(request, upstream, service, match)

    async def _shadowed(
        self,
        request: web.BaseRequest,
        route: Route,
        headers: CIMultiDict[str],
        match: Match,
        started: float,
    ) -> web.StreamResponse:
        method = request.method
        arrived = self.wall_clock()
        body = await self._body_for(request, buffer=True) or b""
        capture = Capture(self.config.shadow.record_body_bytes)
        resp = await self._forward(request, MONOLITH, headers, body, match, capture)
        # The client already has its full response; queueing the copy is a non-blocking put.
        if route.service not in self.bases:
            self.stats.incr("shadow_errors")
            return resp
        shadow_headers = headers.copy()
        shadow_headers[SHADOW_HEADER] = "1"
        recorded_request = RecordedRequest(
            method,
            request.raw_path,
            redact_headers(headers.items()),
            body[: self.config.shadow.record_body_bytes],
            len(body) > self.config.shadow.record_body_bytes,
        )
        monolith = RecordedResponse(
            resp.status,
            redact_headers(resp.headers.items()),
            capture.body(),
            (time.perf_counter() - started) * 1000,
            capture.truncated,
        )
        self.shadow.submit(
            ShadowJob(
                URL(self.bases[route.service] + request.raw_path, encoded=True),
                method,
                shadow_headers,
                body,
                route.service,
                {
                    "request_id": headers.get("X-Request-ID", ""),
                    "route": f"{route.method} {route.path}",
                    "at": arrived,
                    "request": recorded_request,
                    "monolith": monolith,
                },
                control=(
                    (URL(self.bases[MONOLITH] + request.raw_path, encoded=True), headers.copy())
                    if self.shadow.wants_recheck(method)
                    else None
                ),
            )
        )
        return resp
