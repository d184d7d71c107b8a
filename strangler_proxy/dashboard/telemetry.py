"""Time series the dashboard keeps itself: request/error rates and CDC lag history.

The proxy's stats are cumulative counters; a rate is the difference between the newest
sample and the oldest one inside a short sliding window. CDC providers answer "lag now";
the history of those answers feeds the chart. Both are sampled about once a second by the
dashboard's sampler task and are bounded in memory.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from strangler_proxy.dashboard.ports import TableLag

Counters = dict[tuple[str, str], tuple[int, int]]


class RateTracker:
    """Requests/s and errors/s per route pattern (and per target) over a sliding window."""

    def __init__(self, window: float = 10.0, max_samples: int = 64) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self._samples: deque[tuple[float, Counters]] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def sample(self, series: Iterable[Mapping[str, Any]], now: float) -> None:
        """Record the cumulative counters of a `Stats.snapshot()["series"]` list."""
        counters: Counters = {
            (str(s["route"]), str(s["target"])): (int(s["requests"]), int(s["errors"]))
            for s in series
        }
        with self._lock:
            self._samples.append((now, counters))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
                self._samples.popleft()

    def rates(self) -> dict[str, dict[str, Any]]:
        """Per pattern: `req_s`, `err_s` (None until two samples exist) and per-target shares."""
        with self._lock:
            if not self._samples:
                return {}
            first_t, first = self._samples[0]
            last_t, last = self._samples[-1]
        elapsed = last_t - first_t
        out: dict[str, dict[str, Any]] = {}
        for (route, target), (requests, errors) in last.items():
            entry = out.setdefault(
                route,
                {"requests": 0, "errors": 0, "req_s": None, "err_s": None, "targets": {}},
            )
            entry["requests"] += requests
            entry["errors"] += errors
            if elapsed <= 0:
                continue
            before_req, before_err = first.get((route, target), (0, 0))
            req_s = max(0, requests - before_req) / elapsed
            err_s = max(0, errors - before_err) / elapsed
            entry["req_s"] = round((entry["req_s"] or 0.0) + req_s, 2)
            entry["err_s"] = round((entry["err_s"] or 0.0) + err_s, 2)
            entry["targets"][target] = round(req_s, 2)
        return out


class LagHistory:
    """The last `max_points` lag readings per table (seconds and events), oldest first."""

    def __init__(self, max_points: int = 300) -> None:
        self.max_points = max_points
        self._series: dict[str, deque[tuple[float, float | None, int | None]]] = {}
        self._latest: dict[str, TableLag] = {}
        self._lock = threading.Lock()

    def sample(self, lags: Iterable[TableLag], now: float) -> None:
        with self._lock:
            for lag in lags:
                series = self._series.get(lag.table)
                if series is None:
                    series = self._series[lag.table] = deque(maxlen=self.max_points)
                series.append((now, lag.lag_seconds, lag.lag_events))
                self._latest[lag.table] = lag

    def snapshot(self) -> list[dict[str, Any]]:
        """One entry per table: the latest reading and its history as `[t, seconds, events]`."""
        with self._lock:
            return [
                {
                    **self._latest[table].to_dict(),
                    "history": [
                        [round(t, 3), None if s is None else round(s, 3), e] for t, s, e in series
                    ],
                }
                for table, series in sorted(self._series.items())
            ]
