"""One periodic sweep instead of a timer per request: upstream deadlines, header-read
timeouts (on both paths) and idle keep-alive connections."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from strangler_proxy.fastpath.fullpath import GuardedServer
    from strangler_proxy.fastpath.protocol import FastProtocol
    from strangler_proxy.fastpath.server import FastServer

IDLE_TIMEOUT = 75.0


def expire(proto: FastProtocol) -> None:
    """Total timeout: fail the upstream exchange this connection is waiting on, drop its socket."""
    exchange = proto.exchange
    conn = proto.upstream
    if exchange is not None:
        exchange.fail(TimeoutError("upstream timeout"))
    if conn is not None:
        conn.abort()


class Sweeper:
    """Checks every connection of the listener every `tick` seconds."""

    def __init__(
        self,
        full: GuardedServer,
        fast: FastServer | None,
        header_timeout: float,
        total_timeout: float,
    ) -> None:
        self.full = full
        self.fast = fast
        self.header_timeout = header_timeout
        # A timeout fires at most a tenth late (0.25 s cap).
        self.tick = min(0.25, max(0.005, min(total_timeout, header_timeout) / 10))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="proxy-sweeper")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_idle_check = loop.time() + IDLE_TIMEOUT / 5
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            head_cutoff = now - self.header_timeout
            if self.fast is not None:
                self._sweep_fast(now, head_cutoff)
            for handler in self.full.handlers():
                if handler.head_overdue(head_cutoff):
                    handler.time_out_head()
            if now >= next_idle_check and self.fast is not None:
                next_idle_check = now + IDLE_TIMEOUT / 5
                cutoff = now - IDLE_TIMEOUT
                for proto in list(self.fast.connections):
                    if not proto.busy and proto.idle_since < cutoff and proto.transport is not None:
                        proto.transport.close()

    def _sweep_fast(self, now: float, head_cutoff: float) -> None:
        assert self.fast is not None
        for proto in list(self.fast.connections):
            deadline = proto.deadline
            if deadline and deadline <= now:
                proto.deadline = 0.0
                expire(proto)
            since = proto.head_since
            if since and since < head_cutoff and not proto.busy:
                proto.time_out_head()
