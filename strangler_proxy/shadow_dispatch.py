"""Shadow copies: sent in the background by a fixed pool of workers from a bounded queue.

Why apart from the request path: a copy is queued with a non-blocking put after the client
has its answer, and a full queue drops (and counts) copies; nothing here can slow a client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from strangler_proxy.config import ProxyConfig
from strangler_proxy.shadow import RecordedResponse, ShadowPair, ShadowSink, redact_headers
from strangler_proxy.stats import Stats

log = logging.getLogger("strangler_proxy")


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
