"""Benchmark: PostgreSQL → Kafka → service database, side by side with PostgreSQL → embedded log.

Both pipelines run in this process on the same PostgreSQL server (each on its own database and
slot) with the same SQLite service database shape, so the ratio is measured in one run:

1. throughput: a backlog of N rows is committed in one go; events/s = N / time until the
   sink has applied the last of them (capture, transport and sink all included);
2. lag: a writer commits single-row transactions at a steady rate for S seconds; lag of an
   event = time it became visible in the service database − its commit time (source.ts_ms),
   reported as p50 / p99.

    .venv/bin/python bench/cdc_pg_kafka.py [--rows 20000] [--rate 1000] [--seconds 10]

Starts its own PostgreSQL and Tansu broker (or uses $PG_URL / $KAFKA_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
from sqlalchemy import text  # noqa: E402

from cdc.capture.postgres import PgCaptureConfig, PgCaptureWorker, enable_capture  # noqa: E402
from cdc.db import make_engine  # noqa: E402
from cdc.mapping import parse_mapping  # noqa: E402
from cdc.ports import Transport  # noqa: E402
from cdc.sink import Sink, SinkConfig  # noqa: E402
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig  # noqa: E402
from cdc.transport.kafka import KafkaConfig, KafkaTransport  # noqa: E402
from tests.fixtures.kafka import FAST_GROUP_SETTINGS, start_kafka_broker  # noqa: E402
from tests.fixtures.postgres import start_postgres  # noqa: E402

TOPIC = "bench.public.events"
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

    def apply(self, msgs):
        result = super().apply(msgs)
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
            topic_prefix="bench",
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
        SinkConfig(group=f"bench-{name}", topics=(TOPIC,), batch_size=2000, poll_timeout_s=0.01),
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

    # 1. throughput on a backlog
    started = time.monotonic()
    cur.execute(
        "INSERT INTO events (payload, amount) SELECT md5(g::text), g * 0.01 "
        "FROM generate_series(1, %s) g",
        (args.rows,),
    )
    published_at = None
    deadline = time.monotonic() + 300
    while sink.applied < args.rows and time.monotonic() < deadline:
        if published_at is None and capture.stats.events >= args.rows:
            published_at = time.monotonic()
        time.sleep(0.002)
    wait_applied(args.rows)
    done = time.monotonic()
    throughput = args.rows / (done - started)
    capture_rate = args.rows / ((published_at or done) - started)
    # 2. lag at a steady write rate
    sink.lags_ms.clear()
    base = sink.applied
    interval = 1.0 / args.rate
    writes = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        cur.execute("INSERT INTO events (payload, amount) VALUES ('x', 1.00)")
        writes += 1
        delay = t0 + writes * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    achieved = writes / (time.monotonic() - t0)
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
        "events_per_s": throughput,
        "capture_per_s": capture_rate,
        "write_rate": achieved,
        "lag_p50_ms": _pct(lags, 0.50),
        "lag_p99_ms": _pct(lags, 0.99),
        "lag_mean_ms": statistics.fmean(lags) if lags else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000, help="backlog rows for throughput")
    parser.add_argument("--rate", type=int, default=1000, help="steady writes/s for lag")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the lag run")
    parser.add_argument(
        "--kafka-batch-bytes", type=int, default=512 * 1024, help="kafka-python producer batch_size"
    )
    args = parser.parse_args()
    pg = start_postgres()
    broker = start_kafka_broker()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="cdcbench-") as tmp:
            work = Path(tmp)
            url = pg.create_database(f"bench_{uuid.uuid4().hex[:8]}")
            log = EmbeddedLog(EmbeddedLogConfig(log_dir=work / "log", partitions=3))
            results.append(run_pipeline("embedded", url, log, work, args))
            url = pg.create_database(f"bench_{uuid.uuid4().hex[:8]}")
            kafka = KafkaTransport(
                KafkaConfig(
                    bootstrap_servers=broker.bootstrap,
                    partitions=3,
                    linger_ms=5,
                    batch_size=args.kafka_batch_bytes,
                    **FAST_GROUP_SETTINGS,
                )
            )
            try:
                results.append(run_pipeline("kafka", url, kafka, work, args))
            finally:
                kafka.close()
    finally:
        broker.stop()
        pg.stop()
    print(
        f"PostgreSQL (pgoutput) → transport → SQLite service DB; backlog {args.rows} rows, "
        f"steady {args.rate} writes/s for {args.seconds:.0f} s"
    )
    print(
        f"{'pipeline':<10} {'events/s':>10} {'captured/s':>11} {'writes/s':>9} "
        f"{'lag p50':>9} {'lag p99':>9}"
    )
    for r in results:
        print(
            f"{r['pipeline']:<10} {r['events_per_s']:>10.0f} {r['capture_per_s']:>11.0f} "
            f"{r['write_rate']:>9.0f} "
            f"{r['lag_p50_ms']:>7.0f}ms {r['lag_p99_ms']:>7.0f}ms"
        )
    emb, kaf = results
    print(f"kafka/embedded throughput ratio: {kaf['events_per_s'] / emb['events_per_s']:.2f}")


if __name__ == "__main__":
    main()
