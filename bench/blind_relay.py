"""A blind TCP relay on uvloop: the cheapest possible Python hop, as a floor for the proxy.

    .venv/bin/python bench/blind_relay.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT

Each client connection gets its own upstream connection and bytes are copied both ways
without being parsed: no HTTP, no routing, no headers added, no pooling. Whatever this costs in
front of an upstream on the same cores is the price of one extra process hop (wake-ups,
syscalls, the kernel's loopback work), which any proxy pays before doing anything useful; the
proxy bench measures it in the same run as the real proxy. Prints `ready` once listening.
Benchmark tooling only: it is not safe to expose (it forwards anything to its upstream).
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class _Side(asyncio.Protocol):
    """One end of a relayed pair: what it reads is written to its peer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # client bytes that arrived before the upstream connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def _serve(port: int, host: str, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()

    def client_side() -> _Side:
        client = _Side()

        async def connect() -> None:
            try:
                _, upstream = await loop.create_connection(_Side, host, upstream_port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            upstream.peer, client.peer = client, upstream
            for data in client.early:
                upstream.transport.write(data)  # type: ignore[union-attr]
            client.early.clear()
            if client.transport is None or client.transport.is_closing():
                upstream.transport.close()  # type: ignore[union-attr]

        loop.create_task(connect())
        return client

    server = await loop.create_server(client_side, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()


def main() -> None:
    port, host, upstream_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    uvloop.run(_serve(port, host, upstream_port))


if __name__ == "__main__":
    main()
