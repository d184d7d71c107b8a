"""Live request statistics per (route, target) and their Prometheus text rendering.

Recording is a handful of integer operations per request (a counter, a bisect into fixed
histogram buckets, a bounded deque append) so it stays off the latency path; percentiles are
computed only when someone asks (admin API), from the most recent samples.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable

from strangler_proxy.canary import CANARY_KEYS, judge_split, split_note

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


class CanarySplit:
    """What one canary route at one share actually did: requests per side, requests keyed by
    the client address, and the distinct sticky-key buckets seen (the first `CANARY_KEYS`;
    a full set means "at least that many"). `key` names the configured sticky key (None:
    the canary buckets clients by address only). Recording is O(1) and allocation-free."""

    __slots__ = ("to_service", "to_monolith", "by_address", "buckets", "key")

    def __init__(self, key: str | None) -> None:
        self.to_service = 0
        self.to_monolith = 0
        self.by_address = 0
        self.buckets: set[int] = set()
        self.key = key

    def observe(self, to_service: bool, bucket: int, by_address: bool) -> None:
        if to_service:
            self.to_service += 1
        else:
            self.to_monolith += 1
        if by_address:
            self.by_address += 1
        if len(self.buckets) < CANARY_KEYS:
            self.buckets.add(bucket)

    def add(
        self, to_service: int, to_monolith: int, by_address: int, buckets: Iterable[int]
    ) -> None:
        """Add another split's figures (a worker's), keeping the bucket set bounded."""
        self.to_service += to_service
        self.to_monolith += to_monolith
        self.by_address += by_address
        for bucket in buckets:
            if len(self.buckets) >= CANARY_KEYS:
                break
            self.buckets.add(bucket)


class Stats:
    """All series plus proxy-wide counters (shadow queue drops, fallbacks, rejects)."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], Series] = {}
        #: Per (route pattern, canary threshold 0..10000): the split it made.
        self.canaries: dict[tuple[str, int], CanarySplit] = {}
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
            "connect_retries": 0,  # connects tried again while an upstream refused (restarting)
        }

    def observe(
        self, route: str, target: str, status: int, latency_ms: float, proxy_error: bool = False
    ) -> None:
        key = (route, target)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        series.observe(status, latency_ms, proxy_error)

    def canary(self, route: str, threshold: int, key: str | None) -> CanarySplit:
        """The split of `route` at `threshold`, created on first use with its key's name."""
        split = self.canaries.get((route, threshold))
        if split is None:
            split = self.canaries[(route, threshold)] = CanarySplit(key)
        return split

    def canary_notes(self, current: set[tuple[str, int]]) -> list[str]:
        """`judge_split`'s warnings about the splits of canaries at their `current`
        (route pattern, threshold)."""
        notes = []
        for (route, threshold), split in sorted(self.canaries.items()):
            if (route, threshold) in current:
                warning = split_row(route, threshold, split)["warning"]
                if warning:
                    notes.append(split_note(route, threshold / 100, str(warning)))
        return notes

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
            "canaries": {
                key: (c.to_service, c.to_monolith, c.by_address, sorted(c.buckets), c.key)
                for key, c in self.canaries.items()
            },
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
        canaries: dict[tuple[str, int], tuple] = data.get("canaries", {})  # type: ignore[assignment]
        for (route, threshold), (
            to_service,
            to_monolith,
            by_address,
            buckets,
            key,
        ) in canaries.items():
            self.canary(route, threshold, key).add(to_service, to_monolith, by_address, buckets)

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
        return {
            "series": rows,
            "counters": dict(self.counters),
            "canaries": [
                split_row(route, threshold, c)
                for (route, threshold), c in sorted(self.canaries.items())
            ],
        }

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
        out += _canary_metrics(sorted(self.canaries.items()))
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


def split_row(route: str, threshold: int, c: CanarySplit) -> dict[str, object]:
    """One canary split for /admin/stats, with the judge's warning (None: looks sound)."""
    requests = c.to_service + c.to_monolith
    share = threshold / 100
    distinct = len(c.buckets)
    return {
        "route": route,
        "share": share,
        "requests": requests,
        "to_service": c.to_service,
        "to_monolith": c.to_monolith,
        "observed_share": round(100 * c.to_service / requests, 2) if requests else None,
        "distinct_keys": distinct,
        "distinct_keys_capped": distinct >= CANARY_KEYS,
        "by_address": c.by_address,
        "client_key": c.key,
        "warning": judge_split(share, c.to_service, c.to_monolith, distinct, c.by_address, c.key),
    }


def _canary_metrics(items: list[tuple[tuple[str, int], CanarySplit]]) -> list[str]:
    if not items:
        return []
    out = [
        "# HELP strangler_proxy_canary_requests_total Canary requests by the side the split"
        " sent them to (share: the canary percent).",
        "# TYPE strangler_proxy_canary_requests_total counter",
    ]
    for (route, threshold), c in items:
        share = _fmt(threshold / 100)
        for side, count in (("service", c.to_service), ("monolith", c.to_monolith)):
            labels = _labels(route=route, share=share, side=side)
            out.append(f"strangler_proxy_canary_requests_total{labels} {count}")
    out += [
        "# HELP strangler_proxy_canary_by_address_total Canary requests bucketed by the client"
        " address (no sticky key in the request).",
        "# TYPE strangler_proxy_canary_by_address_total counter",
    ]
    for (route, threshold), c in items:
        labels = _labels(route=route, share=_fmt(threshold / 100))
        out.append(f"strangler_proxy_canary_by_address_total{labels} {c.by_address}")
    out += [
        f"# HELP strangler_proxy_canary_distinct_keys Distinct sticky-key buckets seen (at most"
        f" {CANARY_KEYS}: that many or more).",
        "# TYPE strangler_proxy_canary_distinct_keys gauge",
    ]
    for (route, threshold), c in items:
        labels = _labels(route=route, share=_fmt(threshold / 100))
        out.append(f"strangler_proxy_canary_distinct_keys{labels} {len(c.buckets)}")
    return out


def _fmt(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"
