"""Caps on open client connections, total and per client address, shared by both paths.

Why: without a cap, thousands of idle connections were all accepted. A connection over a cap
gets a complete 503 answer (`too_many_connections`) and is closed before anything is read.
A connection handed from the fast path to the aiohttp path stays counted once.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from strangler_proxy.errors import ErrorShape
from strangler_proxy.stats import Stats


class ConnectionGate:
    """Counts open connections by transport; refuses those over `total` or `per_client`."""

    def __init__(self, total: int, per_client: int, errors: ErrorShape, stats: Stats) -> None:
        self.total = total
        self.per_client = per_client
        self.errors = errors
        self.stats = stats
        self._owners: dict[int, str] = {}
        self._per: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._owners)

    def admit(self, transport: asyncio.BaseTransport, remote: str) -> bool:
        key = id(transport)
        if key in self._owners:
            return True  # handed off: already counted
        if len(self._owners) >= self.total:
            return self._refuse(transport, f"the proxy has {self.total} connections open")
        if self._per[remote] >= self.per_client:
            return self._refuse(
                transport, f"this client address has {self.per_client} connections open"
            )
        self._owners[key] = remote
        self._per[remote] += 1
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        remote = self._owners.pop(id(transport), None)
        if remote is not None:
            left = self._per[remote] - 1
            if left > 0:
                self._per[remote] = left
            else:
                del self._per[remote]

    def _refuse(self, transport: asyncio.BaseTransport, why: str) -> bool:
        self.stats.incr("connections_refused")
        body = self.errors.response_bytes(
            503, "too_many_connections", f"{why}; try again later", close=True
        )
        transport.write(body)  # type: ignore[attr-defined]
        transport.close()
        return False
