"""Initial snapshot from the slot's exported snapshot meets the stream without gap or overlap;
an interrupted snapshot resumes and still converges."""

from __future__ import annotations

import random
import threading
from collections import defaultdict

import psycopg2
import pytest
from sqlalchemy import text

from cdc.mapping import parse_mapping
from cdc.sink import Sink, SinkConfig
from cdc.transport.embedded import EmbeddedProducer
from cdc.verify import verify
from kitcore.db import make_engine
from tests.integration.cdc_pg.helpers import (
    confirmed_flush,
    embedded,
    execute,
    make_worker,
    pump_until,
    read_events,
    scalar,
)

pytestmark = pytest.mark.integration

TOPIC = "monolith.public.products"
MAPPING = parse_mapping(
    {
        "service": "svc",
        "tables": [
            {
                "source": "products",
                "target": "products",
                "key": ["id"],
                "columns": {"id": "id", "name": "name", "qty": "qty", "price": "price"},
            }
        ],
    }
)


def _lsn(text_lsn: str) -> int:
    hi, lo = text_lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


@pytest.fixture
def products(pg_url):
    execute(
        pg_url,
        "CREATE TABLE products (id int PRIMARY KEY, name text, qty int, price numeric(12, 2))",
        "INSERT INTO products SELECT g, 'p' || g, g % 7, g * 1.25 FROM generate_series(1, 300) g",
    )
    return pg_url


class Writer(threading.Thread):
    """Random single-row inserts/updates/deletes on the source until stopped."""

    def __init__(self, url: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.rng = url, random.Random(seed)
        self.stop = threading.Event()
        self.ops = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = psycopg2.connect(self.url)
            conn.autocommit = True
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    pid = self.rng.randint(1, 400)
                    k = self.rng.random()
                    if k < 0.5:
                        cur.execute(
                            "UPDATE products SET qty = qty + 1, price = price + 0.01 WHERE id = %s",
                            (pid,),
                        )
                    elif k < 0.8:
                        cur.execute(
                            "INSERT INTO products VALUES (%s, %s, 0, 1.00) ON CONFLICT DO NOTHING",
                            (pid, f"n{pid}"),
                        )
                    else:
                        cur.execute("DELETE FROM products WHERE id = %s", (pid,))
                    self.ops += 1
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc


def _drain_capture(worker, url):
    """Stream until the slot confirmed everything written so far."""
    target = _lsn(scalar(url, "SELECT pg_current_wal_lsn()::text"))
    pump_until(worker, lambda: confirmed_flush(url, "strangler_cdc") >= target, timeout_s=30)


def _apply_and_verify(log, source_url, tmp_path, wait_for_join=False):
    target = make_engine(f"sqlite:///{tmp_path / 'target.db'}")
    with target.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price NUMERIC(12, 2))"
            )
        )
    sink = Sink(target, MAPPING, log, SinkConfig(group="svc", topics=(TOPIC,)))
    try:
        if wait_for_join:  # Kafka: join the group before counting empty polls as idle
            sink.start()
            sink.consumer.wait_for_assignment(30)
        sink.drain(idle_polls=3, timeout_s=60)
    finally:
        sink.close()
    source = make_engine(source_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        report = verify(source, target, MAPPING)
    finally:
        source.dispose()
        target.dispose()
    return report


def _check_history(events):
    """Per key, each event must start from the state the previous one left (FULL identity):
    no gap (a change missed) and no overlap (a change applied on top of itself)."""
    state: dict[int, dict | None] = defaultdict(lambda: None)
    for e in events:
        v, key = e["value"], e["key"]["id"]
        if v["op"] == "r":
            assert state[key] is None, f"snapshot row {key} after it was already known"
            state[key] = v["after"]
        elif v["op"] == "c":
            assert state[key] is None, f"insert of {key} that already exists (overlap)"
            state[key] = v["after"]
        elif v["op"] == "u":
            assert v["before"] == state[key], f"update of {key} from an unseen state (gap)"
            state[key] = v["after"]
        elif v["op"] == "d":
            assert v["before"] == state[key], f"delete of {key} from an unseen state (gap)"
            state[key] = None


def test_snapshot_and_stream_meet_without_gap_or_overlap_under_concurrent_writes(
    products, tmp_path
):
    log = embedded(tmp_path)
    writer = Writer(products, seed=5)
    writer.start()
    worker = make_worker(products, log, ("products",), snapshot_chunk=20)
    try:
        worker.prepare()  # slot + exported snapshot, while the writer runs
        ops_at_slot = writer.ops
        assert worker.run_snapshot()
        worker.start_stream()
        pump_until(worker, lambda: writer.ops > ops_at_slot + 200, timeout_s=30)
        writer.stop.set()
        writer.join(10)
        assert writer.error is None
        _drain_capture(worker, products)
    finally:
        writer.stop.set()
        worker.close()
    events = read_events(log, [TOPIC])
    snap = [e for e in events if e["value"]["op"] == "r"]
    assert snap and snap[-1]["value"]["source"]["snapshot"] == "last"
    assert len(events) > len(snap)  # the writes during and after the snapshot streamed
    _check_history(events)
    progress = worker.snapshot_progress()
    assert [(p.status, p.mode) for p in progress] == [("done", "exported")]
    assert progress[0].rows_done == len(snap) and progress[0].chunks_done >= len(snap) // 20
    report = _apply_and_verify(log, products, tmp_path)
    assert report.ok, report.tables


class CrashingProducer(EmbeddedProducer):
    """Acknowledges `good` batches, then fails like a process dying mid-snapshot."""

    def __init__(self, log, good: int) -> None:
        super().__init__(log)
        self.good = good

    def send_batch(self, messages):
        if self.good <= 0:
            raise RuntimeError("simulated crash")
        self.good -= 1
        super().send_batch(messages)


def test_an_interrupted_snapshot_resumes_after_its_last_chunk_and_converges(products, tmp_path):
    from cdc.capture.postgres import PgCaptureConfig, PgCaptureWorker

    log = embedded(tmp_path)
    make_worker(products, log, ("products",)).close()  # enable capture only
    first = PgCaptureWorker(
        products,
        log,
        PgCaptureConfig(tables=("products",), snapshot_chunk=20),
        producer=CrashingProducer(log, good=4),
    )
    try:
        first.prepare()
        with pytest.raises(RuntimeError, match="simulated crash"):
            first.run_snapshot()
        (progress,) = first.snapshot_progress()
        assert (progress.status, progress.rows_done, progress.chunks_done) == ("running", 80, 4)
    finally:
        first.close()  # the exported snapshot is gone with its connection
    # changes while no worker runs, in the done range, the rest, and new keys
    execute(
        products,
        "UPDATE products SET qty = -1 WHERE id IN (5, 150)",
        "DELETE FROM products WHERE id IN (6, 151)",
        "INSERT INTO products VALUES (1000, 'late', 1, 9.99)",
    )
    writer = Writer(products, seed=9)
    writer.start()
    second = make_worker(products, log, ("products",), snapshot_chunk=20)
    try:
        second.prepare()
        assert second.exported_snapshot is None  # slot exists: resume, not a new slot
        assert second.run_snapshot()
        second.start_stream()
        pump_until(second, lambda: writer.ops > 150, timeout_s=30)
        writer.stop.set()
        writer.join(10)
        assert writer.error is None
        _drain_capture(second, products)
        (progress,) = second.snapshot_progress()
    finally:
        writer.stop.set()
        second.close()
    assert (progress.status, progress.mode) == ("done", "resumed")
    snap_keys = [e["key"]["id"] for e in read_events(log, [TOPIC]) if e["value"]["op"] == "r"]
    assert len(snap_keys) == len(set(snap_keys))  # resumed after row 80, nothing re-read
    assert snap_keys[:80] == list(range(1, 81))
    report = _apply_and_verify(log, products, tmp_path)
    assert report.ok, report.tables
