"""Wiring: build the proxy from a ProxyConfig and injectable adapters, start and stop it.

`bootstrap()` only builds objects; `await runtime.start()` opens sockets, `await
runtime.stop()` stops accepting, drains in-flight requests (up to `shutdown_timeout`) and
releases everything. `serve()` runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from strangler_proxy.admin import create_admin_app
from strangler_proxy.config import Limits, ProxyConfig
from strangler_proxy.dashboard.ports import CdcProvider, ParityProvider, PlaybookProvider
from strangler_proxy.dashboard.state import Dashboard
from strangler_proxy.errors import ErrorShape
from strangler_proxy.fastpath import ProxyListener
from strangler_proxy.fastpath.admission import ConnectionGate
from strangler_proxy.fastpath.fullpath import GuardedAppRunner
from strangler_proxy.fastpath.sweeper import Sweeper
from strangler_proxy.logsafe import RejectionLog
from strangler_proxy.routes import RouteTable
from strangler_proxy.server import ProxyCore
from strangler_proxy.service import Guard, RouteService, readiness_guard
from strangler_proxy.shadow import (
    JsonLinesSink,
    MultiSink,
    RingBufferSink,
    ShadowJudge,
    ShadowSink,
)
from strangler_proxy.stats import Stats
from strangler_proxy.store import RouteStore
from strangler_proxy.workers import WorkerPool, worker_count

log = logging.getLogger("strangler_proxy")
ADMIN_CONNECTIONS = 256  # the admin port's cap on open connections (total and per address)


def resolve_admin_token(config: ProxyConfig) -> tuple[str, Path | None]:
    """Use the configured token, else the token file, else generate one into the file (0600)."""
    if config.admin_token:
        return config.admin_token, None
    path = Path(config.admin_token_file)
    if path.exists():
        token = path.read_text().strip()
        if len(token) >= 16:
            return token, path
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, path


class ProxyRuntime:
    """A running (or ready-to-run) proxy: the core, the admin app and the route poller."""

    def __init__(
        self,
        config: ProxyConfig,
        store: RouteStore,
        core: ProxyCore,
        route_service: RouteService,
        ring: RingBufferSink,
        sink: ShadowSink,
        admin_token: str,
        token_path: Path | None,
        dashboard: Dashboard | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.core = core
        self.route_service = route_service
        self.ring = ring
        self.sink = sink
        self.admin_token = admin_token
        self.token_path = token_path
        self.dashboard = dashboard
        self.proxy_port: int | None = None
        self.admin_port: int | None = None
        self._listener: ProxyListener | None = None
        self.workers: WorkerPool | None = None
        self._admin_runner: GuardedAppRunner | None = None
        self._admin_sweeper: Sweeper | None = None
        self._poller: asyncio.Task[None] | None = None
        self._reload_lock: asyncio.Lock | None = None
        self.reloads = 0
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._reported: tuple[int, float] = (0, 0.0)  # (version, monotonic time) last reported

    @property
    def proxy_url(self) -> str:
        return f"http://{self.config.listen_host}:{self.proxy_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.config.admin_host}:{self.admin_port}"

    async def start(self) -> None:
        config = self.config
        self._reload_lock = asyncio.Lock()
        await asyncio.to_thread(self._prepare_store)
        await self.reload()
        await self.core.start()
        # Client traffic: in this process (fast path + aiohttp fallback), or in worker
        # processes sharing the port when `workers` != 1 (see strangler_proxy/workers.py).
        if worker_count(config) > 1:
            self.workers = WorkerPool(self)
            self.proxy_port = await self.workers.start()
        else:
            self._listener = ProxyListener(self.core)
            self.proxy_port = await self._listener.start()
        admin_app = create_admin_app(self, self.admin_token)
        core = self.core
        limits = Limits()
        self._admin_runner = GuardedAppRunner(
            admin_app,
            limits=limits,
            gate=ConnectionGate(ADMIN_CONNECTIONS, ADMIN_CONNECTIONS, ErrorShape(), core.stats),
            errors=ErrorShape(),  # the kit's own shape: the admin API is the kit's
            stats=core.stats,
            rejections=RejectionLog(log),
        )
        await self._admin_runner.setup()
        assert self._admin_runner.guarded is not None
        self._admin_sweeper = Sweeper(
            self._admin_runner.guarded, None, config.timeouts.header, config.timeouts.total
        )
        self._admin_sweeper.start()
        admin_site = web.TCPSite(self._admin_runner, config.admin_host, config.admin_port)
        await admin_site.start()
        self.admin_port = _bound_port(self._admin_runner)
        self._poller = asyncio.create_task(self._poll(), name="route-poller")

    def _prepare_store(self) -> None:
        self.store.create_schema()
        self.store.sync_services(self.config.upstreams)
        if self.config.routes:
            self.store.declare(self.config.routes)

    async def reload(self, *, force: bool = False) -> bool:
        """Load and swap the table if the stored version moved; returns True if swapped."""
        assert self._reload_lock is not None
        async with self._reload_lock:
            version = await asyncio.to_thread(self.store.version)
            if not force and version == self.core.table.version:
                return False
            version, routes = await asyncio.to_thread(self.store.load)
            self.core.swap_table(RouteTable(routes, version))
            self.reloads += 1
            if self.workers is not None:
                self.workers.push_table()
            return True

    def served_version(self) -> int:
        """The route table version every process of this proxy serves (workers acknowledge)."""
        if self.workers is None:
            return self.core.table.version
        return self.workers.served_version()

    async def report_served(self) -> None:
        """Record the served version in the store: at once when it moved, else as a heartbeat
        every second (a proxy that stops reporting is no longer waited for)."""
        version, at = self._reported
        served = self.served_version()
        if served == version and time.monotonic() - at < 1.0:
            return
        await asyncio.to_thread(self.store.report_served, self.instance, served)
        self._reported = (served, time.monotonic())

    async def _poll(self) -> None:
        interval = self.config.poll_interval
        while True:
            try:
                await self.report_served()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a missed heartbeat only delays acknowledgements
                log.warning("route version not reported", exc_info=True)
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep serving with the last good table
                log.warning("route table reload failed; keeping the current table", exc_info=True)

    async def stop(self) -> None:
        """Graceful: stop accepting, let in-flight requests finish, then release resources."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.store.forget_instance, self.instance)
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self.workers is not None:
            await self.workers.stop()
        if self._admin_sweeper is not None:
            self._admin_sweeper.stop()
            self._admin_sweeper = None
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        await self.core.stop()
        self.sink.close()
        await asyncio.to_thread(self.store.close)


def _bound_port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("runner is not listening")


def bootstrap(
    config: ProxyConfig,
    *,
    shadow_sink: ShadowSink | None = None,
    shadow_judge: ShadowJudge | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    store: RouteStore | None = None,
    guards: Sequence[Guard] | None = None,
    dashboard: bool | Dashboard = True,
    parity: ParityProvider | None = None,
    cdc: CdcProvider | None = None,
    playbook: PlaybookProvider | None = None,
) -> ProxyRuntime:
    """Wire the proxy. Extra `shadow_sink` (e.g. the parity comparator) gets every pair too;
    a `shadow_judge` (the parity comparator's verdict) turns on the re-check of safe pairs
    that differ (`shadow.recheck_after_s`: CDC lag is counted `lagged`, not as a mismatch).

    Default guards: the readiness guard. Pass `guards=[...]` to add playbook guards (the
    readiness guard is kept unless the list is given explicitly *and* omits it).
    The dashboard (on the admin port, under /dashboard/) is on unless `dashboard=False`;
    `parity`, `cdc` and `playbook` providers feed it (defaults show nothing), or pass a
    ready `Dashboard`.
    """
    store = store or RouteStore.from_url(config.store_url, create=False)
    ring = RingBufferSink(config.shadow.ring_size)
    sinks: list[ShadowSink] = [ring]
    if config.shadow.jsonl_path:
        sinks.append(_LazyJsonLines(config.shadow.jsonl_path))
    if shadow_sink is not None:
        sinks.append(shadow_sink)
    sink = MultiSink(sinks)
    stats = Stats()
    core = ProxyCore(
        config,
        RouteTable((), version=0),
        stats,
        sink,
        clock=clock,
        wall_clock=wall_clock,
        judge=shadow_judge,
    )
    if guards is None:
        guards = [readiness_guard(dict(config.upstreams))]
    route_service = RouteService(store, guards)
    token, token_path = resolve_admin_token(config)
    board: Dashboard | None = None
    if isinstance(dashboard, Dashboard):
        board = dashboard
    elif dashboard:
        board = Dashboard(
            parity=parity or ParityProvider(),
            cdc=cdc or CdcProvider(),
            playbook=playbook or PlaybookProvider(),
        )
    return ProxyRuntime(
        config, store, core, route_service, ring, sink, token, token_path, dashboard=board
    )


class _LazyJsonLines(ShadowSink):
    """Opens the JSON Lines file on the first pair, so an idle proxy creates no file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sink: JsonLinesSink | None = None

    def record(self, pair) -> None:  # type: ignore[no-untyped-def]
        if self._sink is None:
            self._sink = JsonLinesSink(self.path)
        self._sink.record(pair)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


async def serve(
    runtime: ProxyRuntime, *, ready: Callable[[ProxyRuntime], None] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    if ready is not None:
        ready(runtime)
    try:
        await stop.wait()
    finally:
        print("strangler-proxy: shutting down, draining in-flight requests", file=sys.stderr)
        await runtime.stop()
