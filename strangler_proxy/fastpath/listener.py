"""The client-facing port: the fast path in front of the guarded aiohttp handler."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from strangler_proxy.fastpath.admission import ConnectionGate
from strangler_proxy.fastpath.fullpath import GuardedServer
from strangler_proxy.fastpath.server import FastServer
from strangler_proxy.fastpath.sweeper import Sweeper
from strangler_proxy.logsafe import RejectionLog
from strangler_proxy.server import ProxyCore

log = logging.getLogger("strangler_proxy")


def make_listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound, listening TCP socket (SO_REUSEPORT lets every worker bind the same port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class ProxyListener:
    """Listens, and owns what serves the port: fast path, guarded aiohttp path, sweeper."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.fast: FastServer | None = None
        self.fallback: GuardedServer | None = None
        self.sweeper: Sweeper | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self, sock: socket.socket | None = None, *, reuse_port: bool = False) -> int:
        """Listen (on `sock` if given, else the configured address); returns the bound port."""
        core = self.core
        config = core.config
        limits = config.limits
        gate = ConnectionGate(
            limits.max_connections, limits.max_connections_per_client, core.errors, core.stats
        )
        self.fallback = GuardedServer(
            core.handle,
            limits=limits,
            gate=gate,
            errors=core.errors,
            stats=core.stats,
            rejections=RejectionLog(log),
            access_log=None,
        )
        factory: Callable[[], asyncio.BaseProtocol] = self.fallback
        if config.fast_path:
            self.fast = FastServer(core, self.fallback)
            factory = self.fast
        self.sweeper = Sweeper(
            self.fallback, self.fast, config.timeouts.header, config.timeouts.total
        )
        self.sweeper.start()
        if sock is None:
            sock = make_listening_socket(
                config.listen_host, config.listen_port, reuse_port=reuse_port
            )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, sock=sock, backlog=1024)
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to shutdown_timeout), close all."""
        if self._server is not None:
            self._server.close()
        timeout = self.core.config.shutdown_timeout
        if self.fast is not None:
            await self.fast.drain(timeout)
        elif self.fallback is not None:
            self.fallback.pre_shutdown()
            await self.fallback.shutdown(timeout)
        if self.sweeper is not None:
            self.sweeper.stop()
        self._server = None

    @property
    def handoffs(self) -> int:
        return self.fast.handoffs if self.fast is not None else 0
