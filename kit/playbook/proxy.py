"""The proxy as `kit up` runs it: wired from the manifest with the playbook's guards, shadow
pairs counted into the parity statistics the `canary` gate reads, and dashboard providers.

`strangler_proxy` knows neither `parity` nor the playbook; this module adapts between them:
the proxy's `ShadowPair` is converted to parity's and compared on a background thread (the
proxy's event loop never waits for a comparison or a statistics write; when the bounded queue
is full, pairs are dropped and counted rather than slowing clients down). The parity
comparator is also the proxy's `ShadowJudge`: a safe pair it calls a mismatch is re-checked
on both sides by the proxy, and comes back marked `lagged` (counted apart) or `mismatch`
(the re-check's pair recorded as the evidence).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from kit.manifest import (
    Manifest,
    parity_redactor,
    parity_rules,
    proxy_config,
    traffic_ready_paths,
)
from kit.playbook import pipelines as pl
from kit.playbook.guards import GuardContext, route_guard
from kit.playbook.ryw import ryw_windows
from kit.playbook.state import STEPS, StateStore
from strangler_proxy.shadow import (
    RECHECK_DROPPED,
    RECHECK_LAGGED,
    RECHECK_MISMATCH,
    ShadowJudge,
    ShadowSink,
)
from strangler_proxy.shadow import ShadowPair as ProxyPair

log = logging.getLogger("kit.playbook.proxy")


def to_parity_pair(pair: ProxyPair) -> dict[str, Any]:
    """The proxy's shadow pair as parity.recording.ShadowPair fields."""
    svc = pair.service_response
    return {
        "method": pair.request.method,
        "path": pair.request.path,  # with its query string; parity splits it
        "request_headers": dict(pair.request.headers),
        "request_body": pair.request.body,
        "control_status": pair.monolith.status,
        "control_headers": dict(pair.monolith.headers),
        "control_body": pair.monolith.body,
        "control_latency": pair.monolith.latency_ms / 1000.0,
        "candidate_status": svc.status if svc is not None else None,
        "candidate_headers": dict(svc.headers) if svc is not None else {},
        "candidate_body": svc.body if svc is not None else b"",
        "candidate_latency": (svc.latency_ms / 1000.0) if svc is not None else 0.0,
        "candidate_error": pair.service_error,
    }


class ParityJudge(ShadowJudge):
    """The parity comparator's verdict for the proxy's re-check: a mismatch (noise, errors
    and pairs both sides refused are not re-checked)."""

    def __init__(self, pair_sink: Any) -> None:
        self.pair_sink = pair_sink

    def differs(self, pair: ProxyPair) -> bool:
        return str(self.pair_sink.compare(to_parity_pair(pair)).outcome) == "mismatch"


def record_pair(pair_sink: Any, pair: ProxyPair) -> bool:
    """One proxy pair into a parity PairSink, by its re-check verdict: `lagged` counts the pair
    as lagged; `mismatch` records the re-check's pair (the evidence) in its place; `dropped`
    (differed, re-check not made: over its bounds) is left out. False when left out."""
    verdict = pair.extra.get("recheck") if pair.extra else None
    second = pair.extra.get("recheck_pair") if pair.extra else None
    if verdict == RECHECK_DROPPED:
        return False
    if verdict == RECHECK_LAGGED:
        pair_sink.record(to_parity_pair(pair), lagged=True)
    elif verdict == RECHECK_MISMATCH and isinstance(second, ProxyPair):
        pair_sink.record(to_parity_pair(second))
    else:
        pair_sink.record(to_parity_pair(pair))
    return True


class ParityShadowSink(ShadowSink):
    """Feeds shadow pairs to a parity PairSink on a worker thread (started on first pair)."""

    def __init__(self, pair_sink: Any, queue_size: int = 1000) -> None:
        self.pair_sink = pair_sink
        self.queue: queue.Queue[ProxyPair | None] = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.recorded = 0
        self.recheck_dropped = 0  # differed, re-check over its bounds: left out of parity
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def record(self, pair: ProxyPair) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="parity-shadow", daemon=True
                    )
                    self._thread.start()
        try:
            self.queue.put_nowait(pair)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            pair = self.queue.get()
            if pair is None:
                return
            try:
                if record_pair(self.pair_sink, pair):
                    self.recorded += 1
                else:
                    self.recheck_dropped += 1
            except Exception:  # noqa: BLE001 - parity must never break the proxy
                log.exception("parity: shadow pair not recorded")

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued pairs are recorded (tests, shutdown)."""
        import time

        deadline = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)

    def close(self) -> None:
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join(timeout=5)
        stats = getattr(self.pair_sink, "stats", None)
        if stats is not None and hasattr(stats, "close"):
            stats.close()


def make_pair_sink(m: Manifest) -> Any:
    from parity.compare import Comparator
    from parity.recording import PairSink, RecordingStore, open_stats_store

    recorder = None
    redactor = parity_redactor(m)
    if m.parity.recordings_dir is not None:
        recorder = RecordingStore(
            m.parity.recordings_dir / "shadow.jsonl",
            sample_rate=m.parity.sample_rate,
            redactor=redactor,
        )
    return PairSink(
        open_stats_store(m.parity.stats_url),
        Comparator(parity_rules(m)),
        recorder=recorder,
        redactor=redactor,
    )


def _providers(m: Manifest, state: StateStore, stats: Any, transport: Any) -> dict[str, Any]:
    """Dashboard providers (parity, CDC lag, playbook step) when the proxy supports them."""
    try:
        from strangler_proxy.dashboard.adapters import StatsStoreParity, StatusCdcProvider
        from strangler_proxy.dashboard.ports import PlaybookProvider, PlaybookStep
    except ImportError:  # an older proxy without a dashboard
        return {}

    def lag_rows() -> list[Any]:
        rows: list[Any] = []
        for name in m.services:
            st = state.get(name)
            direction = "reverse" if st.write_owner == "service" else "forward"
            if not st.reached("capture"):
                continue
            pipe = (pl.reverse_pipeline if direction == "reverse" else pl.forward_pipeline)(m, name)
            pipes = [pipe] + ([pl.replica_pipeline(m, name)] if m.services[name].replicas else [])
            for p in pipes:
                for x in pl.pipeline_lag(p, transport):
                    rows.append(_LagRow(f"{x.table} ({p.direction})", x.events, x.seconds))
        return rows

    class _Playbook(PlaybookProvider):
        def steps(self) -> dict[str, PlaybookStep]:
            out = {}
            for name in m.services:
                st = state.get(name)
                out[name] = PlaybookStep(
                    service=name,
                    step=st.step or "not started",
                    index=st.index + 1,
                    total=len(STEPS),
                    status="interrupted" if st.interrupted else st.status,
                    detail=f"writes owned by {st.write_owner}",
                )
            return out

    return {
        "parity": StatsStoreParity(stats),
        "cdc": StatusCdcProvider(lag_rows),
        "playbook": _Playbook(),
    }


class _LagRow:
    def __init__(self, table: str, lag_events: int | None, lag_s: float | None) -> None:
        self.table = table
        self.lag_events = lag_events
        self.lag_s = lag_s
        self.topic = ""


def build_proxy(m: Manifest, **overrides: Any) -> Any:
    """A ProxyRuntime from the manifest (not started): guards, parity sink, dashboard."""
    import inspect

    from strangler_proxy.bootstrap import bootstrap
    from strangler_proxy.service import readiness_guard

    pair_sink = make_pair_sink(m)
    shadow = ParityShadowSink(pair_sink)
    state = StateStore(m.kit.state_url)
    transport = pl.make_transport(m)

    def lag(service: str, direction: str) -> list[pl.Lag]:
        build = {"forward": pl.forward_pipeline, "replica": pl.replica_pipeline}
        pipe = build.get(direction, pl.reverse_pipeline)(m, service)
        return pl.pipeline_lag(pipe, transport)

    if "ryw_window_s" not in overrides:
        overrides["ryw_window_s"] = ryw_windows(m, state, lag)
        log.info("read-your-writes windows: %s", overrides["ryw_window_s"])
    config = proxy_config(m, **overrides)

    gctx = GuardContext(m, state, pair_sink.stats, lag)
    guards = [
        readiness_guard(dict(config.upstreams), paths=traffic_ready_paths(m)),
        route_guard(gctx),
    ]
    kwargs: dict[str, Any] = {"shadow_sink": shadow, "guards": guards}
    params = inspect.signature(bootstrap).parameters
    if "shadow_judge" in params:
        kwargs["shadow_judge"] = ParityJudge(pair_sink)
    for name, provider in _providers(m, state, pair_sink.stats, transport).items():
        if name in params:
            kwargs[name] = provider
    runtime = bootstrap(config, **kwargs)
    runtime.parity_sink = shadow  # type: ignore[attr-defined] - for tests and stats
    return runtime
