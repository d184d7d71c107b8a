"""Several proxy processes sharing one port, supervised by the process that runs the admin API.

Why: one Python process tops out at one core; the proxy has to keep up with an upstream that
uses all of them. Each worker is a fresh interpreter (`python -m strangler_proxy.workers FD`,
never a fork of a process with threads and open database connections) that binds the proxy
port with SO_REUSEPORT (the kernel spreads new connections across workers; the supervisor
holds a bound, non-listening socket so the port stays reserved across worker restarts), has
its own upstream pools and its own shadow dispatcher. Workers never open the route store:
the supervisor polls it (one poller per proxy instance) and pushes each new table to them, so
a worker process does not load SQLAlchemy at all (less memory per worker, fewer database
connections).

Supervisor <-> worker talk over a socketpair, length-prefixed pickles (trusted: our own
children). Workers send their stats *deltas* (a fresh `Stats` is swapped in at each report, so
merging is exact), gauges (in flight, shadow queue, route version, breaker states) and shadow
pairs every `REPORT_INTERVAL`; the supervisor merges the deltas into its runtime's `Stats`,
feeds the pairs to its sinks (one JSON Lines writer, the ring buffer, the parity comparator),
and exposes the gauges, so the admin API and dashboard read one aggregated view. The setup
message carries the current route table; every table the supervisor swaps in (its poller, or
a change made through the admin API) is sent to every worker at once. SIGTERM to the
supervisor drains every worker; a worker that dies is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from strangler_proxy.config import ProxyConfig
from strangler_proxy.fastpath import ProxyListener, make_listening_socket
from strangler_proxy.routes import RouteTable
from strangler_proxy.server import ProxyCore
from strangler_proxy.shadow import ShadowPair, ShadowSink
from strangler_proxy.stats import Stats

if TYPE_CHECKING:
    from strangler_proxy.bootstrap import ProxyRuntime

log = logging.getLogger("strangler_proxy.workers")

REPORT_INTERVAL = 0.2
_HEADER = struct.Struct("!I")
_BREAKER_RANK = {"closed": 0, "half_open": 1, "open": 2}


def worker_count(config: ProxyConfig) -> int:
    """Configured workers; 0 means one per CPU."""
    return config.workers or (os.cpu_count() or 1)


def run(coro: Coroutine[Any, Any, Any], event_loop: str = "auto") -> Any:
    """asyncio.run with the configured loop: uvloop when asked for (or 'auto' and installed)."""
    factory = None
    if event_loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


# -- framing ---------------------------------------------------------------------------------
def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _read_message(reader: asyncio.StreamReader) -> Any:
    size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
    return pickle.loads(await reader.readexactly(size))


def _table_fields(table: RouteTable) -> dict[str, Any]:
    """A route table as the supervisor sends it (in the setup message, then on every swap)."""
    return {"routes": table.routes, "version": table.version}


# -- supervisor side -------------------------------------------------------------------------
class _Worker:
    """One worker slot: its process, channel and last reported gauges."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.proc: subprocess.Popen[bytes] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.ready = False
        self.gauges: dict[str, Any] = {}
        self.restarts = 0


class WorkerPool:
    """Starts, watches, replaces and stops the worker processes of one ProxyRuntime."""

    def __init__(self, runtime: ProxyRuntime) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.count = worker_count(self.config)
        self.slots = [_Worker(i) for i in range(self.count)]
        self.port = 0
        self.stopping = False
        self._reserve: socket.socket | None = None
        self.replaced = 0

    async def start(self) -> int:
        """Reserve the port, start every worker, return once all of them listen."""
        config = self.config
        family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
        reserve = socket.socket(family, socket.SOCK_STREAM)
        reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserve.bind((config.listen_host, config.listen_port))  # bound, never listening
        self._reserve = reserve
        self.port = reserve.getsockname()[1]
        try:
            await asyncio.gather(*(self._spawn(w) for w in self.slots))
        except BaseException:
            await self.stop()
            raise
        return self.port

    async def _spawn(self, worker: _Worker) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            worker.proc = subprocess.Popen(
                [sys.executable, "-m", "strangler_proxy.workers", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            child_sock.close()
        parent_sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=parent_sock)
        worker.writer = writer
        worker.ready = False
        writer.write(
            _frame(
                {
                    "config": self.config,
                    "port": self.port,
                    "slot": worker.slot,
                    **_table_fields(self.runtime.core.table),
                }
            )
        )
        await writer.drain()
        ready = asyncio.get_running_loop().create_future()
        worker.reader_task = asyncio.create_task(
            self._read(worker, reader, ready), name=f"worker-{worker.slot}-reader"
        )
        try:
            await asyncio.wait_for(asyncio.shield(ready), 60)
        except TimeoutError:
            raise RuntimeError(f"proxy worker {worker.slot} did not start") from None

    async def _read(
        self, worker: _Worker, reader: asyncio.StreamReader, ready: asyncio.Future[None]
    ) -> None:
        try:
            while True:
                message = await _read_message(reader)
                self._apply(worker, message)
                if message.get("ready") and not ready.done():
                    worker.ready = True
                    ready.set_result(None)
        except (asyncio.IncompleteReadError, ConnectionError, EOFError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a garbled report must not kill supervision
            log.exception("bad report from proxy worker %s", worker.slot)
        worker.ready = False
        worker.gauges = {}
        self._refresh_gauges()
        if not ready.done():
            ready.set_exception(RuntimeError(f"proxy worker {worker.slot} exited during start"))
            return
        if worker.writer is not None:
            worker.writer.close()
        if self.stopping:
            return
        proc = worker.proc
        if proc is not None:
            code = await asyncio.to_thread(proc.wait)
            log.warning(
                "proxy worker %s (pid %s) exited with %s; replacing it", worker.slot, proc.pid, code
            )
        await asyncio.sleep(0.1)
        if self.stopping:
            return
        worker.restarts += 1
        self.replaced += 1
        try:
            await self._spawn(worker)
        except Exception:  # noqa: BLE001 - try again on the next failure path
            log.exception("could not replace proxy worker %s", worker.slot)

    def _apply(self, worker: _Worker, message: dict[str, Any]) -> None:
        runtime = self.runtime
        stats = message.get("stats")
        if stats:
            runtime.core.stats.merge(stats)
        for pair in message.get("pairs", ()):
            runtime.sink.record(pair)
        gauges = message.get("gauges")
        if gauges is not None:
            worker.gauges = gauges
            self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        core = self.runtime.core
        live = [w.gauges for w in self.slots if w.gauges]
        core.in_flight = sum(g["in_flight"] for g in live)
        core.shadow.external_queued = sum(g["shadow_queued"] for g in live)
        for name, breaker in core.breakers.items():
            states = [g["breakers"].get(name) for g in live if name in g["breakers"]]
            if not states:
                continue
            worst = max(states, key=lambda s: (_BREAKER_RANK.get(s[0], 0), s[1]))
            breaker.state = worst[0]
            breaker.failures = max(s[1] for s in states)

    def describe(self) -> list[dict[str, Any]]:
        """Per-worker view for /admin/stats."""
        return [
            {
                "slot": w.slot,
                "pid": w.proc.pid if w.proc else None,
                "ready": w.ready,
                "restarts": w.restarts,
                "route_version": w.gauges.get("route_version"),
                "in_flight": w.gauges.get("in_flight"),
                "handoffs": w.gauges.get("handoffs"),
            }
            for w in self.slots
        ]

    def served_version(self) -> int:
        """The oldest route version a ready worker acknowledged (what every worker serves)."""
        versions = [int(w.gauges.get("route_version") or 0) for w in self.slots if w.ready]
        return min(versions) if versions else self.runtime.core.table.version

    def push_table(self) -> None:
        """Send the runtime's current route table to every worker (they swap it in at once)."""
        message = _frame(_table_fields(self.runtime.core.table))
        for worker in self.slots:
            writer = worker.writer
            if writer is not None and not writer.is_closing():
                writer.write(message)

    async def stop(self) -> None:
        """SIGTERM every worker (each drains its in-flight requests), wait, then reap."""
        self.stopping = True
        for worker in self.slots:
            if worker.proc is not None and worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        grace = self.config.shutdown_timeout + 5
        for worker in self.slots:
            proc = worker.proc
            if proc is None:
                continue
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), grace)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for worker in self.slots:
            if worker.reader_task is not None:
                # The final report is read before EOF; give the reader a moment to finish.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(worker.reader_task, 2)
            if worker.writer is not None:
                worker.writer.close()
        if self._reserve is not None:
            self._reserve.close()
            self._reserve = None


# -- worker side -----------------------------------------------------------------------------
class _ChannelSink(ShadowSink):
    """Collects shadow pairs for the next report to the supervisor."""

    def __init__(self) -> None:
        self.pending: list[ShadowPair] = []

    def record(self, pair: ShadowPair) -> None:
        self.pending.append(pair)

    def take(self) -> list[ShadowPair]:
        pairs, self.pending = self.pending, []
        return pairs


async def worker_main(sock: socket.socket, setup: dict[str, Any]) -> None:
    """Serve the proxy port until SIGTERM (or the supervisor goes away), reporting as we go."""
    config: ProxyConfig = setup["config"]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    sink = _ChannelSink()
    table = RouteTable(setup["routes"], setup["version"])
    core = ProxyCore(config, table, Stats(), sink)
    await core.start()
    listener = ProxyListener(core)
    await listener.start(make_listening_socket(config.listen_host, setup["port"], reuse_port=True))

    def report(**extra: Any) -> None:
        delta = core.stats
        core.stats = core.shadow.stats = Stats()
        writer.write(
            _frame(
                {
                    "stats": delta.export()
                    if delta.series or any(delta.counters.values())
                    else None,
                    "pairs": sink.take(),
                    "gauges": {
                        "pid": os.getpid(),
                        "in_flight": core.in_flight,
                        "shadow_queued": core.shadow.queued,
                        "route_version": core.table.version,
                        "handoffs": listener.handoffs,
                        "breakers": {
                            name: (b.state, b.failures) for name, b in core.breakers.items()
                        },
                    },
                    **extra,
                }
            )
        )

    async def reporter() -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            report()
            await writer.drain()

    async def channel() -> None:
        """Route tables from the supervisor; EOF means it died or closed the channel."""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, EOFError):
            while True:
                message = await _read_message(reader)
                if "routes" in message:
                    core.swap_table(RouteTable(message["routes"], message["version"]))
                    report()  # acknowledges the version at once (the supervisor records it)
        stop.set()

    report(ready=True)
    await writer.drain()
    tasks = [asyncio.create_task(reporter()), asyncio.create_task(channel())]
    await stop.wait()
    await listener.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await core.stop()  # drains queued shadow copies (bounded)
    with contextlib.suppress(Exception):
        report()
        await writer.drain()
        writer.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process: `python -m strangler_proxy.workers FD`."""
    args = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(args[0]))
    # The setup message is read blocking, before any event loop exists.
    sock.setblocking(True)
    size = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))[0]
    setup = pickle.loads(_recv_exactly(sock, size))
    config: ProxyConfig = setup["config"]
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    run(worker_main(sock, setup), config.event_loop)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise SystemExit("supervisor closed the channel before sending the setup")
        data += chunk
    return bytes(data)


if __name__ == "__main__":
    main()
