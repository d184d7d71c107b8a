"""Per-service circuit breaker guarding fallback to the monolith.

closed -> (failure_threshold consecutive failures) -> open
open -> (open_seconds elapsed) -> half-open: up to `half_open_probes` requests try the service
half-open -> success -> closed; failure -> open again.

While open, requests that may fall back go straight to the monolith without touching the
service. The clock is injected so the state machine is testable without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from strangler_proxy.config import BreakerSettings

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Single-threaded (event loop) breaker; no locks needed."""

    __slots__ = ("settings", "clock", "state", "failures", "opened_at", "probes", "transitions")

    def __init__(
        self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probes = 0
        self.transitions = 0

    def allow(self) -> bool:
        """May a request try the service now? (Counts half-open probes.)"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.settings.open_seconds:
                return False
            self._move(HALF_OPEN)
            self.probes = 0
        if self.probes < self.settings.half_open_probes:
            self.probes += 1
            return True
        return False

    def record_success(self) -> None:
        self.failures = 0
        if self.state != CLOSED:
            self._move(CLOSED)

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or (
            self.state == CLOSED and self.failures >= self.settings.failure_threshold
        ):
            self.opened_at = self.clock()
            self._move(OPEN)

    def _move(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.transitions += 1
