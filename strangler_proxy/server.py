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
import hashlib
import json
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
from strangler_proxy.routes import (
    IDEMPOTENT_METHODS,
    MODE_CANARY,
    MODE_EXTRACTED,
    MODE_MONOLITH,
    MODE_SHADOW,
    MONOLITH,
    SAFE_METHODS,
    Match,
    Route,
    RouteTable,
)
from strangler_proxy.shadow import (
    RecordedRequest,
    RecordedResponse,
    ShadowPair,
    ShadowSink,
    redact_headers,
)
from strangler_proxy.stats import Stats

log = logging.getLogger("strangler_proxy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Dropped from requests as well: the upstream gets its own Host (see preserve_host).
_REQUEST_DROP = HOP_BY_HOP | {"host"}
_RESPONSE_DROP = HOP_BY_HOP
SMALL_BODY = 64 * 1024  # request bodies up to this are read whole (cheaper than streaming)
SMALL_RESPONSE = 256 * 1024  # responses with a known length up to this are read whole
SHADOW_HEADER = "X-Strangler-Shadow"


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


class BodyTooLarge(Exception):
    """The request body exceeded the configured limit while being read."""


def json_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The shop's error shape, plus route/service when the proxy knows them."""
    body = json.dumps({"error": {"code": code, "message": message, **extra}}).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def canary_bucket(key: str) -> int:
    """Deterministic bucket 0..9999 for a sticky key (stable across processes and restarts)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10000


def canary_hit(threshold: int, key: Callable[[], str]) -> bool:
    """Whether a request goes to the canary's service at `threshold` (0..10000): by the
    bucket of its sticky `key` (asked for only when the threshold is neither 0 nor 100 %)."""
    if threshold <= 0:
        return False
    if threshold >= 10000:
        return True
    return canary_bucket(key()) < threshold


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

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.request.content.iter_chunked(65536):
            seen += len(chunk)
            if seen > self.limit:
                self.too_large = True
                raise BodyTooLarge()
            yield chunk


class _Capture:
    """Collects up to `limit` bytes of a streamed body for shadow recording."""

    __slots__ = ("limit", "parts", "size", "truncated")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - self.size
        if room <= 0:
            self.truncated = self.truncated or bool(chunk)
            return
        if len(chunk) > room:
            chunk = chunk[:room]
            self.truncated = True
        self.parts.append(chunk)
        self.size += len(chunk)

    def body(self) -> bytes:
        return b"".join(self.parts)


class ShadowJob:
    """Everything a background worker needs to send the copy and record the pair."""

    __slots__ = ("url", "method", "headers", "body", "pair_base", "service")

    def __init__(
        self,
        url: URL,
        method: str,
        headers: CIMultiDict[str],
        body: bytes,
        service: str,
        pair_base: dict[str, Any],
    ) -> None:
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body
        self.service = service
        self.pair_base = pair_base


class ShadowDispatcher:
    """Bounded queue + fixed worker pool; when full, copies are dropped and counted."""

    def __init__(
        self,
        config: ProxyConfig,
        sink: ShadowSink,
        stats: Stats,
        session_factory: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self.settings = config.shadow
        self.sink = sink
        self.stats = stats
        self._session_factory = session_factory
        self._queue: asyncio.Queue[ShadowJob] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.in_flight = 0
        self.external_queued = 0  # reported by worker processes (supervisor side)

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.settings.queue_size)
        self._session = self._session_factory()
        self._workers = [
            asyncio.create_task(self._work(), name=f"shadow-worker-{i}")
            for i in range(self.settings.max_concurrency)
        ]

    @property
    def queued(self) -> int:
        own = self._queue.qsize() if self._queue is not None else 0
        return own + self.external_queued

    def submit(self, job: ShadowJob) -> bool:
        """Never blocks the caller."""
        assert self._queue is not None
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats.incr("shadow_dropped")
            return False
        return True

    async def stop(self, drain_timeout: float = 1.0) -> None:
        if self._queue is not None and self._workers:
            try:
                await asyncio.wait_for(self._queue.join(), drain_timeout)
            except TimeoutError:
                pass
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            self.in_flight += 1
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a shadow problem must never escape
                log.exception("shadow job failed")
            finally:
                self.in_flight -= 1
                self._queue.task_done()

    async def _run(self, job: ShadowJob) -> None:
        assert self._session is not None
        started = time.perf_counter()
        response: RecordedResponse | None = None
        error: str | None = None
        try:
            async with self._session.request(
                job.method,
                job.url,
                headers=job.headers,
                data=job.body or None,
                allow_redirects=False,
            ) as resp:
                capture = _Capture(self.settings.record_body_bytes)
                async for chunk in resp.content.iter_chunked(65536):
                    capture.add(chunk)
                latency = (time.perf_counter() - started) * 1000
                response = RecordedResponse(
                    resp.status,
                    redact_headers(resp.headers.items()),
                    capture.body(),
                    latency,
                    capture.truncated,
                )
            self.stats.incr("shadow_sent")
        except TimeoutError:
            error = "timeout"
            self.stats.incr("shadow_errors")
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{exc.__class__.__name__}: {exc}"
            self.stats.incr("shadow_errors")
        latency_ms = (time.perf_counter() - started) * 1000
        pair = ShadowPair(
            service=job.service,
            service_response=response,
            service_error=error,
            service_latency_ms=latency_ms,
            **job.pair_base,
        )
        self.sink.record(pair)


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
    ) -> None:
        self.config = config
        self.table = table
        self.stats = stats
        self.clock = clock
        self.wall_clock = wall_clock
        self.bases = dict(config.upstreams)
        self.breakers = {name: CircuitBreaker(config.breaker, clock) for name in config.upstreams}
        self.session: aiohttp.ClientSession | None = None
        self.shadow = ShadowDispatcher(config, sink, stats, self._make_session)
        self.limits = config.limits
        self.in_flight = 0

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
        method = request.method
        raw_path = request.raw_path
        rejection = self._reject(request, method, raw_path)
        if rejection is not None:
            self.stats.incr("rejected_requests")
            rejection.force_close()
            return rejection
        table = self.table
        match = table.match(method, request.path)
        kind = match.mode.kind
        route = match.route
        headers = self._upstream_headers(request)
        try:
            if kind == MODE_MONOLITH or route is None:
                target = MONOLITH
                resp = await self._simple(request, MONOLITH, headers, match)
            elif kind == MODE_SHADOW:
                target = MONOLITH
                resp = await self._shadowed(request, route, headers, match, started)
            elif kind == MODE_EXTRACTED:
                target, resp = await self._to_service(request, route, headers, match)
            elif kind == MODE_CANARY:
                if self._canary_hit(request, route, match):
                    target, resp = await self._to_service(request, route, headers, match)
                else:
                    target = MONOLITH
                    resp = await self._simple(request, MONOLITH, headers, match)
            else:  # pragma: no cover - the parser makes this unreachable
                target, resp = MONOLITH, json_error(500, "bad_mode", str(match.mode))
        except BodyTooLarge:
            target = "-"
            resp = self._too_large()
        latency = (time.perf_counter() - started) * 1000
        self.stats.observe(
            match.pattern,
            target,
            resp.status,
            latency,
            proxy_error=getattr(resp, "_proxy_error", False),
        )
        return resp

    # -- validation ----------------------------------------------------------------------
    def _reject(self, request: web.BaseRequest, method: str, raw_path: str) -> web.Response | None:
        if method == "CONNECT":
            return json_error(
                400, "bad_request", "CONNECT is not supported: this is not a forward proxy"
            )
        if not raw_path.startswith("/"):
            return json_error(
                400,
                "bad_request",
                "only origin-form request targets (/path?query) are accepted; "
                "absolute-form and authority-form targets are refused",
            )
        limits = self.limits
        if len(raw_path) > limits.max_line_bytes:
            return json_error(
                414, "uri_too_long", f"request target longer than {limits.max_line_bytes} bytes"
            )
        size = 0
        for name, value in request.raw_headers:
            size += len(name) + len(value) + 4
        if size > limits.max_header_bytes:
            return json_error(
                431,
                "headers_too_large",
                f"request headers larger than {limits.max_header_bytes} bytes",
            )
        length = request.content_length
        if length is not None and length > limits.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> web.Response:
        resp = json_error(
            413, "payload_too_large", f"request body larger than {self.limits.max_body_bytes} bytes"
        )
        resp.force_close()
        return resp

    # -- headers -------------------------------------------------------------------------
    def _upstream_headers(self, request: web.BaseRequest) -> CIMultiDict[str]:
        incoming = request.headers
        tokens = _connection_tokens(incoming)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in incoming.items():
            lower = name.lower()
            if lower in _REQUEST_DROP or lower in tokens:
                continue
            out.add(name, value)
        remote = request.remote or ""
        prior = incoming.get("X-Forwarded-For")
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
        data = body.__aiter__() if isinstance(body, _BodyStream) else body
        try:
            return await self.session.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
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
        capture: _Capture | None = None,
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
        if failure.timeout:
            resp = json_error(
                504, "upstream_timeout", failure.detail, route=match.pattern, service=target
            )
        else:
            resp = json_error(
                502, "upstream_unavailable", failure.detail, route=match.pattern, service=target
            )
        resp._proxy_error = True  # type: ignore[attr-defined]
        return resp

    async def _forward(
        self,
        request: web.BaseRequest,
        target: str,
        headers: CIMultiDict[str],
        body: Any,
        match: Match,
        capture: _Capture | None = None,
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
        capture: _Capture | None = None,
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
    def _canary_hit(self, request: web.BaseRequest, route: Route, match: Match) -> bool:
        def key() -> str:
            sticky: str | None = None
            if route.sticky_header:
                sticky = request.headers.get(route.sticky_header)
            elif route.sticky_cookie:
                sticky = request.cookies.get(route.sticky_cookie)
            return sticky or request.remote or ""

        return canary_hit(match.mode.threshold, key)

    async def _to_service(
        self, request: web.BaseRequest, route: Route, headers: CIMultiDict[str], match: Match
    ) -> tuple[str, web.StreamResponse]:
        service = route.service
        can_fallback = route.fallback and request.method in IDEMPOTENT_METHODS
        breaker = self.breakers.get(service)
        if breaker is None:  # route names a service that is not configured here
            return service, json_error(
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
        if method not in SAFE_METHODS and not route.shadow_writes:
            self.stats.incr("shadow_skipped_unsafe")
            return await self._simple(request, MONOLITH, headers, match)
        arrived = self.wall_clock()
        body = await self._body_for(request, buffer=True) or b""
        capture = _Capture(self.config.shadow.record_body_bytes)
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
            )
        )
        return resp
