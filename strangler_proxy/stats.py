"""Live request statistics per (route, target) and their Prometheus text rendering.

Recording is a handful of integer operations per request (a counter, a bisect into fixed
histogram buckets, a bounded deque append) so it stays off the latency path; percentiles are
computed only when someone asks (admin API), from the most recent samples.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable

BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
SAMPLE_WINDOW = 2048


class Series:
    """Counters, a latency histogram and recent samples for one (route, target)."""

    __slots__ = ("requests", "errors", "proxy_errors", "buckets", "sum_ms", "samples")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0  # any 5xx the client saw
        self.proxy_errors = 0  # 5xx produced by the proxy itself (502/504)
        self.buckets = [0] * (len(BUCKETS_MS) + 1)
        self.sum_ms = 0.0
        self.samples: deque[float] = deque(maxlen=SAMPLE_WINDOW)

    def observe(self, status: int, latency_ms: float, proxy_error: bool) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        if proxy_error:
            self.proxy_errors += 1
        self.buckets[bisect_left(BUCKETS_MS, latency_ms)] += 1
        self.sum_ms += latency_ms
        self.samples.append(latency_ms)

    def percentile(self, q: float) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]


class Stats:
    """All series plus proxy-wide counters (shadow queue drops, fallbacks, rejects)."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], Series] = {}
        self.counters: dict[str, int] = {
            "shadow_sent": 0,
            "shadow_dropped": 0,
            "shadow_errors": 0,
            "shadow_skipped_unsafe": 0,
            "fallbacks": 0,
            "breaker_short_circuits": 0,
            "rejected_requests": 0,
            "slow_path_handoffs": 0,  # connections the fast path gave to the aiohttp path
            "held_requests": 0,  # requests that waited for a write cut-over (routes `held`)
            "held_expired": 0,  # ... and got 503 because the cut-over outlasted the limit
        }

    def observe(
        self, route: str, target: str, status: int, latency_ms: float, proxy_error: bool = False
    ) -> None:
        key = (route, target)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        series.observe(status, latency_ms, proxy_error)

    def incr(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def export(self) -> dict[str, object]:
        """Plain-data copy of everything recorded (a worker sends this to the supervisor)."""
        return {
            "series": {
                key: (
                    s.requests,
                    s.errors,
                    s.proxy_errors,
                    list(s.buckets),
                    s.sum_ms,
                    list(s.samples),
                )
                for key, s in self.series.items()
            },
            "counters": dict(self.counters),
        }

    def merge(self, data: dict[str, object]) -> None:
        """Add an `export()` from another Stats (e.g. a worker's since its last report)."""
        series_data: dict[tuple[str, str], tuple] = data["series"]  # type: ignore[assignment]
        for key, (requests, errors, proxy_errors, buckets, sum_ms, samples) in series_data.items():
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = Series()
            series.requests += requests
            series.errors += errors
            series.proxy_errors += proxy_errors
            series.buckets = [a + b for a, b in zip(series.buckets, buckets, strict=True)]
            series.sum_ms += sum_ms
            series.samples.extend(samples)
        counters: dict[str, int] = data["counters"]  # type: ignore[assignment]
        for name, value in counters.items():
            self.incr(name, value)

    def snapshot(self) -> dict[str, object]:
        """JSON-friendly view for /admin/stats."""
        rows = []
        for (route, target), s in sorted(self.series.items()):
            p50 = s.percentile(0.5)
            p99 = s.percentile(0.99)
            rows.append(
                {
                    "route": route,
                    "target": target,
                    "requests": s.requests,
                    "errors": s.errors,
                    "proxy_errors": s.proxy_errors,
                    "latency_ms": {
                        "p50": round(p50, 3) if p50 is not None else None,
                        "p99": round(p99, 3) if p99 is not None else None,
                        "mean": round(s.sum_ms / s.requests, 3) if s.requests else None,
                    },
                }
            )
        return {"series": rows, "counters": dict(self.counters)}

    def prometheus(
        self, extra_gauges: Iterable[tuple[str, str, dict[str, str], float]] = ()
    ) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = [
            "# HELP strangler_proxy_requests_total Requests proxied, by route and target.",
            "# TYPE strangler_proxy_requests_total counter",
        ]
        items = sorted(self.series.items())
        for (route, target), s in items:
            out.append(
                f"strangler_proxy_requests_total{_labels(route=route, target=target)} {s.requests}"
            )
        out += [
            "# HELP strangler_proxy_errors_total Responses with status >= 500, by route and target.",
            "# TYPE strangler_proxy_errors_total counter",
        ]
        for (route, target), s in items:
            out.append(
                f"strangler_proxy_errors_total{_labels(route=route, target=target)} {s.errors}"
            )
        out += [
            "# HELP strangler_proxy_request_duration_seconds Time to answer the client.",
            "# TYPE strangler_proxy_request_duration_seconds histogram",
        ]
        for (route, target), s in items:
            cumulative = 0
            for bound, count in zip(BUCKETS_MS, s.buckets, strict=False):
                cumulative += count
                labels = _labels(route=route, target=target, le=_fmt(bound / 1000))
                out.append(f"strangler_proxy_request_duration_seconds_bucket{labels} {cumulative}")
            labels = _labels(route=route, target=target, le="+Inf")
            out.append(f"strangler_proxy_request_duration_seconds_bucket{labels} {s.requests}")
            base = _labels(route=route, target=target)
            out.append(
                f"strangler_proxy_request_duration_seconds_sum{base} {_fmt(s.sum_ms / 1000)}"
            )
            out.append(f"strangler_proxy_request_duration_seconds_count{base} {s.requests}")
        for name, value in sorted(self.counters.items()):
            metric = f"strangler_proxy_{name}_total"
            out.append(f"# TYPE {metric} counter")
            out.append(f"{metric} {value}")
        declared: set[str] = set()
        for name, help_text, labels, value in extra_gauges:
            if name not in declared:
                declared.add(name)
                out.append(f"# HELP {name} {help_text}")
                out.append(f"# TYPE {name} gauge")
            out.append(f"{name}{_labels(**labels)} {_fmt(value)}")
        return "\n".join(out) + "\n"


def _fmt(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"
