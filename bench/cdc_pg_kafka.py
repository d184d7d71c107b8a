"""Benchmark: PostgreSQL → Kafka → service database, side by side with PostgreSQL → embedded log.

Both pipelines run on the same PostgreSQL server (each on its own database and slot) with the
same SQLite service database shape, so the ratio is measured in one run. By default capture and
sink are separate OS processes, as in a deployment (`kit cdc run --no-sink` / `--no-capture`);
`--mode threads` runs them as two threads of this process (GIL-bound, for comparison):

1. throughput: a backlog of N rows is committed in one go; events/s = N / time until the
   sink has applied the last of them (capture, transport and sink all included);
2. lag: a writer commits single-row transactions at a steady rate for S seconds; lag of an
   event = time it became visible in the service database − its commit time (source.ts_ms),
   reported as p50 / p99.

    .venv/bin/python bench/cdc_pg_kafka.py [--rows 20000] [--rounds 1] [--rate 1000]
        [--seconds 10] [--mode processes|threads|both] [--pipelines embedded,kafka]

`--rounds N` commits N backlogs one after another in each pipeline and reports the median
events/s: on a shared, noisy machine one backlog of a few seconds can land in a burst of
someone else's load.

Starts its own PostgreSQL and Tansu broker (or uses $PG_URL / $KAFKA_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
from _procs import ROOT, stop_processes  # also puts ROOT on sys.path for tests.*
from sqlalchemy import text

from cdc.capture.postgres import (
    PgCaptureConfig,
    PgCaptureWorker,
    enable_capture,
    install_stop_signals,
)
from cdc.mapping import parse_mapping
from cdc.ports import Transport
from cdc.sink import Sink, SinkConfig
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from cdc.transport.kafka import KafkaConfig, KafkaTransport
from kitcore.db import make_engine
from tests.fixtures.kafka import FAST_GROUP_SETTINGS, start_kafka_broker
from tests.fixtures.postgres import start_postgres

BACKLOG = (
    "INSERT INTO events (payload, amount) SELECT md5(g::text), g * 0.01 "
    "FROM generate_series(1, %s) g"
)
MAPPING = parse_mapping(
    {
        "service": "bench",
        "tables": [
            {
                "source": "events",
                "target": "events",
                "key": ["id"],
                "columns": {"id": "id", "payload": "payload", "amount": "amount"},
            }
        ],
    }
)


class TimedSink(Sink):
    """Records, per applied message, visible-in-target time − commit time."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lags_ms: list[int] = []
        self.applied = 0

    def apply(self, msgs, resumed=False):
        result = super().apply(msgs, resumed)
        now = time.time() * 1000
        for m in msgs:
            if m.value:
                src = json.loads(m.value)["source"]
                if src.get("snapshot") == "false" and src.get("ts_ms"):
                    self.lags_ms.append(int(now - src["ts_ms"]))
        self.applied += len(msgs)
        return result


def _pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def steady_writes(cur: Any, rate: float, seconds: float) -> tuple[int, float]:
    """Insert one row at a time at `rate` per second for `seconds`; (writes, achieved rate)."""
    interval = 1.0 / rate
    writes = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        cur.execute("INSERT INTO events (payload, amount) VALUES ('x', 1.00)")
        writes += 1
        delay = t0 + writes * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return writes, writes / (time.monotonic() - t0)


def run_pipeline(name: str, url: str, transport: Transport, work: Path, args) -> dict:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(
        "CREATE TABLE events (id bigserial PRIMARY KEY, payload text, amount numeric(12, 2))"
    )
    enable_capture(url, ["events"])
    target = make_engine(f"sqlite:///{work / f'{name}.db'}")
    with target.begin() as t:
        t.execute(
            text(
                "CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT, amount NUMERIC(12, 2))"
            )
        )
    capture = PgCaptureWorker(
        url,
        transport,
        PgCaptureConfig(
            tables=("events",),
            slot=f"bench_{name}",
            topic_prefix=f"bench_{name}",
            batch_size=2000,
            idle_wait_s=0.01,
        ),
    )
    capture.prepare()
    capture.run_snapshot()
    capture.start_stream()
    sink = TimedSink(
        target,
        MAPPING,
        transport,
        SinkConfig(
            group=f"bench-{name}",
            topics=(f"bench_{name}.public.events",),
            batch_size=2000,
            poll_timeout_s=0.01,
        ),
    )
    if isinstance(transport, KafkaTransport):
        sink.start()  # join the group before the clock starts (the embedded log has no join)
        sink.consumer.wait_for_assignment(60)
    stop = threading.Event()

    def sink_loop() -> None:
        try:
            sink.run(stop)
        finally:
            sink.close()  # the embedded consumer belongs to the thread that opened it

    threads = [
        threading.Thread(target=capture.run, args=(stop,), daemon=True),
        threading.Thread(target=sink_loop, daemon=True),
    ]
    for t in threads:
        t.start()

    def wait_applied(n: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while sink.applied < n and time.monotonic() < deadline:
            if not all(t.is_alive() for t in threads):
                raise RuntimeError(f"{name}: a pipeline thread died")
            time.sleep(0.005)
        if sink.applied < n:
            raise TimeoutError(f"{name}: applied {sink.applied} of {n}")

    # 1. throughput on a backlog, `rounds` times (the median is reported)
    rates, capture_rates = [], []
    for r in range(1, args.rounds + 1):
        started = time.monotonic()
        cur.execute(BACKLOG, (args.rows,))
        published_at = None
        deadline = time.monotonic() + 300
        while sink.applied < r * args.rows and time.monotonic() < deadline:
            if published_at is None and capture.stats.events >= r * args.rows:
                published_at = time.monotonic()
            time.sleep(0.002)
        wait_applied(r * args.rows)
        done = time.monotonic()
        rates.append(args.rows / (done - started))
        capture_rates.append(args.rows / ((published_at or done) - started))
    # 2. lag at a steady write rate
    sink.lags_ms.clear()
    base = sink.applied
    writes, achieved = steady_writes(cur, args.rate, args.seconds)
    wait_applied(base + writes)
    stop.set()
    for t in threads:
        t.join(10)
    capture.close()
    conn.close()
    target.dispose()
    lags = sink.lags_ms
    return {
        "pipeline": name,
        "events_per_s": statistics.median(rates),
        "rounds_events_per_s": rates,
        "capture_per_s": statistics.median(capture_rates),
        "write_rate": achieved,
        "lag_p50_ms": _pct(lags, 0.50),
        "lag_p99_ms": _pct(lags, 0.99),
        "lag_mean_ms": statistics.fmean(lags) if lags else float("nan"),
    }


# ---------------------------------------------------------------------------------------------
# process mode: capture and sink as separate OS processes (what `kit cdc run` deploys)


def _transport(spec: dict) -> Transport:
    if spec["kind"] == "kafka":
        return KafkaTransport(
            KafkaConfig(
                bootstrap_servers=spec["bootstrap"],
                partitions=3,
                linger_ms=spec["linger_ms"],
                batch_size=spec["batch_bytes"],
                max_in_flight_requests=spec["max_in_flight"],
                **FAST_GROUP_SETTINGS,
            )
        )
    return EmbeddedLog(EmbeddedLogConfig(log_dir=Path(spec["log_dir"]), partitions=3))


def role_capture(cfg: dict) -> None:
    """Capture process: snapshot (empty table), stream, note when the backlog was published."""
    stop = threading.Event()
    install_stop_signals(stop)
    worker = PgCaptureWorker(
        cfg["url"],
        _transport(cfg["transport"]),
        PgCaptureConfig(
            tables=("events",),
            slot=cfg["slot"],
            topic_prefix=cfg["slot"],
            batch_size=2000,
            idle_wait_s=0.01,
        ),
    )
    worker.prepare()
    worker.run_snapshot()
    worker.start_stream()
    Path(cfg["capture_ready"]).write_text("ready")
    captured_at: list[float] = []  # when the k-th backlog round was all published
    try:
        while not stop.is_set():
            worker.poll(0.01)
            if worker.stats.events >= (len(captured_at) + 1) * cfg["rows"]:
                captured_at.append(time.time())
        worker.flush()
    finally:
        worker.close()
    Path(cfg["capture_result"]).write_text(json.dumps({"captured_at": captured_at}))


class LagSink(Sink):
    """Records (row id, visible-in-target time − commit time) per streamed event."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lags: list[tuple[int, int]] = []

    def apply(self, msgs, resumed=False):
        result = super().apply(msgs, resumed)
        now = time.time() * 1000
        for m in msgs:
            if m.value:
                doc = json.loads(m.value)
                src = doc["source"]
                if src.get("snapshot") == "false" and src.get("ts_ms") and doc["after"]:
                    self.lags.append((doc["after"]["id"], int(now - src["ts_ms"])))
        return result


def role_sink(cfg: dict) -> None:
    """Sink process: join, then apply until SIGTERM; lags are written at exit."""
    stop = threading.Event()
    install_stop_signals(stop)
    transport = _transport(cfg["transport"])
    sink = LagSink(
        make_engine(cfg["target_url"]),
        MAPPING,
        transport,
        SinkConfig(
            group=cfg["group"],
            topics=(f"{cfg['slot']}.public.events",),
            batch_size=2000,
            poll_timeout_s=0.01,
        ),
    )
    sink.start()
    if isinstance(transport, KafkaTransport):
        sink.consumer.wait_for_assignment(60)
    Path(cfg["sink_ready"]).write_text("ready")
    try:
        while not stop.is_set():
            sink.run_once()
    finally:
        sink.close()
    Path(cfg["sink_result"]).write_text(json.dumps({"lags": sink.lags}))


def run_processes(name: str, url: str, spec: dict, work: Path, args) -> dict:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(
        "CREATE TABLE events (id bigserial PRIMARY KEY, payload text, amount numeric(12, 2))"
    )
    enable_capture(url, ["events"])
    target_path = work / f"{name}.db"
    target = make_engine(f"sqlite:///{target_path}")
    with target.begin() as t:
        t.execute(
            text(
                "CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT, amount NUMERIC(12, 2))"
            )
        )
    target.dispose()
    cfg = {
        "url": url,
        "transport": spec,
        "slot": f"bench_{name}",
        "group": f"bench-{name}",
        "rows": args.rows,
        "target_url": f"sqlite:///{target_path}",
        **{
            f"{role}_{what}": str(work / f"{name}-{role}.{what}")
            for role in ("capture", "sink")
            for what in ("ready", "result")
        },
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--role", role, json.dumps(cfg)], env=env, cwd=ROOT
        )
        for role in ("capture", "sink")
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(Path(cfg[f"{r}_ready"]).exists() for r in ("capture", "sink")):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: a worker process did not start")
            time.sleep(0.05)
        reader = sqlite3.connect(target_path, timeout=60)

        def applied() -> int:
            row = reader.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM _cdc_sink_offsets"
            ).fetchone()
            return int(row[0])

        def wait_applied(n: int, timeout: float = 300) -> float:
            deadline = time.monotonic() + timeout
            while (got := applied()) < n:
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"{name}: a worker process died")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: applied {got} of {n}")
                time.sleep(0.01)
            return time.time()

        # 1. throughput on a backlog, `rounds` times (the median is reported)
        backlog = args.rows * args.rounds
        rounds: list[tuple[float, float]] = []  # (started, applied)
        for r in range(1, args.rounds + 1):
            started = time.time()
            cur.execute(BACKLOG, (args.rows,))
            rounds.append((started, wait_applied(r * args.rows)))
        # 2. lag at a steady write rate
        writes, achieved = steady_writes(cur, args.rate, args.seconds)
        wait_applied(backlog + writes)
        reader.close()
    finally:
        stop_processes(*procs, timeout=30)
        conn.close()
    captured_at = json.loads(Path(cfg["capture_result"]).read_text())["captured_at"]
    rates = [args.rows / (done - started) for started, done in rounds]
    lags = [
        lag
        for row_id, lag in json.loads(Path(cfg["sink_result"]).read_text())["lags"]
        if row_id > backlog
    ]
    return {
        "pipeline": name,
        "mode": "processes",
        "events_per_s": statistics.median(rates),
        "rounds_events_per_s": rates,
        "capture_per_s": statistics.median(
            args.rows / ((captured_at[i] if i < len(captured_at) else done) - started)
            for i, (started, done) in enumerate(rounds)
        ),
        "write_rate": achieved,
        "lag_p50_ms": _pct(lags, 0.50),
        "lag_p99_ms": _pct(lags, 0.99),
        "lag_mean_ms": statistics.fmean(lags) if lags else float("nan"),
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--role":
        {"capture": role_capture, "sink": role_sink}[sys.argv[2]](json.loads(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000, help="backlog rows for throughput")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="backlogs per pipeline, one after another; the median events/s is reported",
    )
    parser.add_argument("--rate", type=int, default=1000, help="steady writes/s for lag")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the lag run")
    parser.add_argument(
        "--mode",
        choices=("processes", "threads", "both"),
        default="processes",
        help="capture and sink as separate processes (default) or threads of this one",
    )
    parser.add_argument("--pipelines", default="embedded,kafka", help="comma-separated")
    parser.add_argument(
        "--kafka-batch-bytes",
        type=int,
        default=1024 * 1024,
        help="kafka-python producer batch_size",
    )
    parser.add_argument("--linger-ms", type=int, default=100, help="kafka-python linger_ms")
    parser.add_argument(
        "--max-in-flight", type=int, default=1, help="producer requests in flight (>1: idempotent)"
    )
    args = parser.parse_args()
    pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    modes = ("processes", "threads") if args.mode == "both" else (args.mode,)
    pg = start_postgres()
    broker = start_kafka_broker() if "kafka" in pipelines else None
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="cdcbench-") as tmp:
            work = Path(tmp)
            for mode in modes:
                for name in pipelines:
                    url = pg.create_database(f"bench_{uuid.uuid4().hex[:8]}")
                    run_dir = work / f"{mode}-{name}"
                    run_dir.mkdir()
                    spec: dict = {"kind": name, "log_dir": str(run_dir / "log")}
                    if name == "kafka":
                        assert broker is not None
                        spec.update(
                            bootstrap=broker.bootstrap,
                            linger_ms=args.linger_ms,
                            batch_bytes=args.kafka_batch_bytes,
                            max_in_flight=args.max_in_flight,
                        )
                    if mode == "processes":
                        results.append(run_processes(name, url, spec, run_dir, args))
                        print(json.dumps(results[-1]), flush=True)
                        continue
                    transport = _transport(spec)
                    try:
                        r = run_pipeline(f"{name}_thr", url, transport, run_dir, args)
                    finally:
                        close = getattr(transport, "close", None)
                        if close:
                            close()
                    results.append({**r, "pipeline": name, "mode": "threads"})
                    print(json.dumps(results[-1]), flush=True)
    finally:
        if broker is not None:
            broker.stop()
        pg.stop()
    print(
        f"PostgreSQL (pgoutput) → transport → SQLite service DB; backlog {args.rows} rows "
        f"x {args.rounds} (median), "
        f"steady {args.rate} writes/s for {args.seconds:.0f} s"
    )
    print(
        f"{'pipeline':<10} {'mode':<10} {'events/s':>10} {'captured/s':>11} {'writes/s':>9} "
        f"{'lag p50':>9} {'lag p99':>9}"
    )
    for r in results:
        print(
            f"{r['pipeline']:<10} {r['mode']:<10} {r['events_per_s']:>10.0f} "
            f"{r['capture_per_s']:>11.0f} {r['write_rate']:>9.0f} "
            f"{r['lag_p50_ms']:>7.0f}ms {r['lag_p99_ms']:>7.0f}ms"
        )
    for mode in modes:
        by = {r["pipeline"]: r for r in results if r["mode"] == mode}
        if "embedded" in by and "kafka" in by:
            ratio = by["kafka"]["events_per_s"] / by["embedded"]["events_per_s"]
            print(f"{mode}: kafka/embedded throughput ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
