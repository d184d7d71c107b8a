"""Shadow copies: sent in the background by a fixed pool of workers from a bounded queue.

Why apart from the request path: a copy is queued with a non-blocking put after the client
has its answer, and a full queue drops (and counts) copies; nothing here can slow a client.

Re-check (the experiment's answer to CDC lag): when a judge is wired and a safe (GET/HEAD)
pair differs, the same request goes to BOTH sides again `shadow.recheck_after_s` later, in the
background. The pair is recorded once, after that, with `extra["recheck"]` = `lagged` (the
re-check agreed) or `mismatch` (and `extra["recheck_pair"]`, the re-check's pair, as the
evidence). At most `recheck_max_in_flight` re-checks wait or run and `recheck_per_second`
start per second; any over that are not made (counted `shadow_recheck_dropped`) and the pair
is recorded marked `dropped` (no verdict: parity leaves it out, as it does a dropped copy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from strangler_proxy.config import ProxyConfig
from strangler_proxy.shadow import (
    RECHECK_DROPPED,
    RECHECK_LAGGED,
    RECHECK_MISMATCH,
    RecordedResponse,
    ShadowJudge,
    ShadowPair,
    ShadowSink,
    redact_headers,
)
from strangler_proxy.stats import Stats

log = logging.getLogger("strangler_proxy")

RECHECK_METHODS = frozenset({"GET", "HEAD"})  # never re-send anything that may write
RECHECK_HEADER = "X-Strangler-Recheck"  # on both requests of a re-check


class Capture:
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

    __slots__ = ("url", "method", "headers", "body", "pair_base", "service", "control")

    def __init__(
        self,
        url: URL,
        method: str,
        headers: CIMultiDict[str],
        body: bytes,
        service: str,
        pair_base: dict[str, Any],
        control: tuple[URL, CIMultiDict[str]] | None = None,
    ) -> None:
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body
        self.service = service
        self.pair_base = pair_base
        self.control = control  # the monolith's URL and headers, for a re-check


class ShadowDispatcher:
    """Bounded queue + fixed worker pool; when full, copies are dropped and counted."""

    def __init__(
        self,
        config: ProxyConfig,
        sink: ShadowSink,
        stats: Stats,
        session_factory: Callable[[], aiohttp.ClientSession],
        judge: ShadowJudge | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = config.shadow
        self.sink = sink
        self.stats = stats
        self.judge = judge
        self._clock = clock
        self._wall_clock = wall_clock
        self._session_factory = session_factory
        self.rechecks_in_flight = 0
        self._rechecks: set[asyncio.Task[None]] = set()
        self._window = (0.0, 0)  # (start of the current second, re-checks started in it)
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
    def rechecking(self) -> bool:
        return self.judge is not None and self.settings.recheck_after_s > 0

    def wants_recheck(self, method: str) -> bool:
        """Whether a copy of this request may be re-checked (safe methods only)."""
        return self.rechecking and method.upper() in RECHECK_METHODS

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
        for task in [*self._workers, *self._rechecks]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._rechecks, return_exceptions=True)
        self._workers = []
        self._rechecks.clear()
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

    async def _fetch(
        self, url: URL, method: str, headers: CIMultiDict[str], body: bytes
    ) -> tuple[RecordedResponse | None, str | None, float]:
        """One request on the shadow pool: (response, None, ms) or (None, error, ms)."""
        assert self._session is not None
        started = time.perf_counter()
        try:
            async with self._session.request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            ) as resp:
                capture = Capture(self.settings.record_body_bytes)
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
            return response, None, latency
        except TimeoutError:
            return None, "timeout", (time.perf_counter() - started) * 1000
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{exc.__class__.__name__}: {exc}"
            return None, error, (time.perf_counter() - started) * 1000

    async def _run(self, job: ShadowJob) -> None:
        response, error, latency_ms = await self._fetch(job.url, job.method, job.headers, job.body)
        self.stats.incr("shadow_sent" if response is not None else "shadow_errors")
        pair = ShadowPair(
            service=job.service,
            service_response=response,
            service_error=error,
            service_latency_ms=latency_ms,
            **job.pair_base,
        )
        if (
            job.control is not None
            and response is not None
            and self.wants_recheck(job.method)
            and await self._differs(pair)
        ):
            if self._admit_recheck():
                self.rechecks_in_flight += 1
                task = asyncio.create_task(self._recheck(job, pair), name="shadow-recheck")
                self._rechecks.add(task)
                task.add_done_callback(self._rechecks.discard)
                return
            self.stats.incr("shadow_recheck_dropped")
            pair = dataclasses.replace(pair, extra={**pair.extra, "recheck": RECHECK_DROPPED})
        self.sink.record(pair)

    def _admit_recheck(self) -> bool:
        """Bound re-checks: in flight, and started per second (a one-second window)."""
        s = self.settings
        if self.rechecks_in_flight >= s.recheck_max_in_flight:
            return False
        now = self._clock()
        start, count = self._window
        if now - start >= 1.0:
            start, count = now, 0
        if count >= s.recheck_per_second:
            self._window = (start, count)
            return False
        self._window = (start, count + 1)
        return True

    async def _differs(self, pair: ShadowPair) -> bool:
        """The judge's verdict, off the event loop; byte-identical answers need no judge. No
        candidate answer differs (a re-check that fails cannot clear a pair)."""
        svc, mono = pair.service_response, pair.monolith
        if svc is None:
            return True
        if svc.status == mono.status and svc.body == mono.body:
            return False
        assert self.judge is not None
        try:
            return await asyncio.to_thread(self.judge.differs, pair)
        except Exception:  # noqa: BLE001 - no verdict: record the pair as it is
            log.exception("shadow judge failed")
            return False

    async def _recheck(self, job: ShadowJob, first: ShadowPair) -> None:
        """After the delay, the same request to both sides again; record `first` with the
        verdict. Cancelled (proxy stopping): the pair is recorded as `dropped` and counted."""
        assert job.control is not None
        verdict: str | None = None
        second: ShadowPair | None = None
        try:
            await asyncio.sleep(self.settings.recheck_after_s)
            control_url, control_headers = job.control
            control_headers = control_headers.copy()
            control_headers[RECHECK_HEADER] = "1"
            service_headers = job.headers.copy()
            service_headers[RECHECK_HEADER] = "1"
            (mono, mono_error, _), (svc, svc_error, svc_ms) = await asyncio.gather(
                self._fetch(control_url, job.method, control_headers, job.body),
                self._fetch(job.url, job.method, service_headers, job.body),
            )
            self.stats.incr("shadow_rechecks")
            if mono is None:
                self.stats.incr("shadow_recheck_errors")  # no verdict: the mismatch stands
                log.info("shadow re-check: monolith failed (%s)", mono_error)
            else:
                second = ShadowPair(
                    request_id=first.request_id,
                    route=first.route,
                    service=first.service,
                    at=self._wall_clock(),
                    request=first.request,
                    monolith=mono,
                    service_response=svc,
                    service_error=svc_error,
                    service_latency_ms=svc_ms,
                )
                lagged = not await self._differs(second)
                verdict = RECHECK_LAGGED if lagged else RECHECK_MISMATCH
                self.stats.incr("shadow_lagged" if lagged else "shadow_recheck_mismatches")
        except asyncio.CancelledError:
            self.stats.incr("shadow_recheck_dropped")
            self.rechecks_in_flight -= 1
            self.sink.record(
                dataclasses.replace(first, extra={**first.extra, "recheck": RECHECK_DROPPED})
            )
            raise
        except Exception:  # noqa: BLE001 - a shadow problem must never escape
            log.exception("shadow re-check failed")
        self.rechecks_in_flight -= 1
        extra = dict(first.extra)
        if verdict is not None:
            extra["recheck"] = verdict
            extra["recheck_pair"] = second
        self.sink.record(dataclasses.replace(first, extra=extra))
