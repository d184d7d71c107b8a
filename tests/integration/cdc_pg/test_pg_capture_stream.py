"""Streaming from a pgoutput slot: row operations, acknowledgement, WAL, slots, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cdc.capture.postgres import (
    CaptureError,
    PgCaptureConfig,
    PgCaptureWorker,
    drop_slot,
    list_slots,
)
from cdc.transport.embedded import EmbeddedProducer
from tests.integration.cdc_pg.helpers import (
    confirmed_flush,
    embedded,
    execute,
    make_worker,
    pump_until,
    read_events,
    scalar,
    stream_events,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOPIC = "monolith.public.items"


@pytest.fixture
def items(pg_url):
    execute(pg_url, "CREATE TABLE items (id int PRIMARY KEY, name text, qty int)")
    return pg_url


def _streaming(url, log, **config):
    worker = make_worker(url, log, ("items",), **config)
    worker.prepare()
    worker.run_snapshot()
    worker.start_stream()
    return worker


def test_insert_update_delete_and_truncate_stream_with_full_before_images(items, tmp_path):
    log = embedded(tmp_path)
    worker = _streaming(items, log)
    try:
        execute(
            items,
            "INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2)",
            "UPDATE items SET qty = 10 WHERE id = 1",
            "UPDATE items SET id = 3 WHERE id = 2",  # key change
            "DELETE FROM items WHERE id = 1",
            "TRUNCATE items",
        )
        events = stream_events(worker, log, TOPIC, 7)
    finally:
        worker.close()
    got = [(e["value"]["op"], e["key"], e["value"]["before"], e["value"]["after"]) for e in events]
    assert got == [
        ("c", {"id": 1}, None, {"id": 1, "name": "a", "qty": 1}),
        ("c", {"id": 2}, None, {"id": 2, "name": "b", "qty": 2}),
        ("u", {"id": 1}, {"id": 1, "name": "a", "qty": 1}, {"id": 1, "name": "a", "qty": 10}),
        ("d", {"id": 2}, {"id": 2, "name": "b", "qty": 2}, None),
        ("c", {"id": 3}, None, {"id": 3, "name": "b", "qty": 2}),
        ("d", {"id": 1}, {"id": 1, "name": "a", "qty": 10}, None),
        ("t", None, None, None),
    ]
    # one transaction per statement (the key change is one): txIds differ, LSNs grow
    tx = [e["value"]["source"]["txId"] for e in events]
    assert tx[0] == tx[1] and tx[3] == tx[4] and len(set(tx)) == 5
    lsns = [e["value"]["source"]["lsn"] for e in events]
    assert lsns == sorted(lsns)


def test_default_identity_gives_key_only_before_on_delete_and_none_on_update(pg_url, tmp_path):
    from cdc.capture.postgres import enable_capture

    execute(pg_url, "CREATE TABLE items (id int PRIMARY KEY, name text, qty int)")
    enable_capture(pg_url, ["items"], replica_identity_full=False)
    log = embedded(tmp_path)
    worker = make_worker(pg_url, log, ("items",), enable=False)
    worker.prepare()
    worker.run_snapshot()
    worker.start_stream()
    try:
        execute(
            pg_url,
            "INSERT INTO items VALUES (1, 'a', 1)",
            "UPDATE items SET qty = 2",
            "UPDATE items SET id = 5",
            "DELETE FROM items",
        )
        events = stream_events(worker, log, TOPIC, 5)
    finally:
        worker.close()
    got = [(e["value"]["op"], e["value"]["before"]) for e in events]
    assert got == [("c", None), ("u", None), ("d", {"id": 1}), ("c", None), ("d", {"id": 5})]


class FailingProducer(EmbeddedProducer):
    """A transport producer whose broker never acknowledges."""

    def send_batch(self, messages):
        raise ConnectionError("broker unavailable")


def test_flushed_lsn_advances_only_after_the_transport_acknowledged(items, tmp_path):
    log = embedded(tmp_path)
    broken = PgCaptureWorker(
        items,
        log,
        PgCaptureConfig(
            tables=("items",), snapshot="never", status_interval_s=0.2, idle_wait_s=0.05
        ),
        producer=FailingProducer(log),
    )
    from cdc.capture.postgres import enable_capture

    enable_capture(items, ["items"])
    broken.prepare()
    start = confirmed_flush(items, "strangler_cdc")
    broken.start_stream()
    execute(items, "INSERT INTO items VALUES (1, 'a', 1)")
    with pytest.raises(ConnectionError):
        pump_until(broken, lambda: False, timeout_s=10)
    broken.close()
    # Keepalives received before the insert may move the position up to that point, never
    # past the unacknowledged transaction.
    after_failure = confirmed_flush(items, "strangler_cdc")
    assert read_events(log, [TOPIC]) == []

    worker = make_worker(items, log, ("items",), snapshot="never")  # restart: at-least-once
    worker.prepare()
    worker.start_stream()
    try:
        events = stream_events(worker, log, TOPIC, 1)
        assert events[0]["value"]["after"] == {"id": 1, "name": "a", "qty": 1}
        assert start <= after_failure <= events[0]["value"]["source"]["lsn"]
        pump_until(worker, lambda: confirmed_flush(items, "strangler_cdc") > start)
        assert confirmed_flush(items, "strangler_cdc") >= worker.acked_lsn > start
    finally:
        worker.close()


def test_idle_capture_confirms_wal_written_by_other_tables(items, tmp_path):
    execute(items, "CREATE TABLE noise (id serial PRIMARY KEY, v text)")
    log = embedded(tmp_path)
    worker = _streaming(items, log)
    try:
        pump_until(worker, lambda: True)
        execute(
            items, *["INSERT INTO noise (v) SELECT md5(g::text) FROM generate_series(1, 200) g"] * 5
        )
        wal_now = scalar(items, "SELECT pg_current_wal_lsn()::text")
        hi, lo = wal_now.split("/")
        target = (int(hi, 16) << 32) | int(lo, 16)
        pump_until(worker, lambda: confirmed_flush(items, "strangler_cdc") >= target, timeout_s=20)
    finally:
        worker.close()
    assert read_events(log, [TOPIC]) == []


def test_slots_are_listed_and_dropped_but_not_while_in_use(items, tmp_path):
    log = embedded(tmp_path)
    worker = _streaming(items, log)
    try:
        slots = {s.name: s for s in list_slots(items)}
        assert slots["strangler_cdc"].plugin == "pgoutput"
        assert slots["strangler_cdc"].active and slots["strangler_cdc"].lag_bytes is not None
        with pytest.raises(CaptureError, match="in use"):
            drop_slot(items, "strangler_cdc")
    finally:
        worker.close()
    pump_until_inactive = time.monotonic() + 10
    while time.monotonic() < pump_until_inactive:
        if not {s.name: s for s in list_slots(items)}["strangler_cdc"].active:
            break
        time.sleep(0.05)
    drop_slot(items, "strangler_cdc")
    assert "strangler_cdc" not in {s.name for s in list_slots(items)}
    assert scalar(items, "SELECT count(*) FROM _cdc_pg_snapshots") == 0
    with pytest.raises(CaptureError, match="does not exist"):
        drop_slot(items, "strangler_cdc")
    # restarting without the slot but with state refuses; here state was dropped too
    again = make_worker(items, log, ("items",))
    try:
        again.prepare()
        assert again.exported_snapshot is not None
    finally:
        again.close()


def test_a_lost_slot_with_existing_state_needs_an_explicit_resnapshot(items, tmp_path):
    log = embedded(tmp_path)
    worker = _streaming(items, log)
    worker.close()
    execute(items, "SELECT pg_drop_replication_slot('strangler_cdc')")
    again = make_worker(items, log, ("items",))
    with pytest.raises(CaptureError, match="is gone"):
        again.prepare()
    again.close()
    fresh = make_worker(items, log, ("items",), resnapshot_if_slot_lost=True)
    try:
        fresh.prepare()
        assert fresh.exported_snapshot is not None
    finally:
        fresh.close()


CAPTURE_PROC = textwrap.dedent("""
    import sys
    from cdc.capture.postgres import PgCaptureConfig, run_capture
    from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
    url, log_dir = sys.argv[1], sys.argv[2]
    log = EmbeddedLog(EmbeddedLogConfig(log_dir=log_dir, partitions=1))
    run_capture(url, log, PgCaptureConfig(tables=("items",), idle_wait_s=0.05))
""")


def test_sigterm_stops_the_worker_cleanly_and_a_restart_resumes_from_the_slot(items, tmp_path):
    from cdc.capture.postgres import enable_capture
    from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig

    enable_capture(items, ["items"])
    log_dir = tmp_path / "log"
    log = EmbeddedLog(EmbeddedLogConfig(log_dir=log_dir, partitions=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", CAPTURE_PROC, items, str(log_dir)], cwd=ROOT, env=env
        )

    def count():
        return sum(log.end_offsets([TOPIC]).values()) if log.partitions_of(TOPIC) else 0

    def active():
        return scalar(
            items, "SELECT active FROM pg_replication_slots WHERE slot_name = 'strangler_cdc'"
        )

    def wait(cond, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        raise TimeoutError

    proc = start()
    try:
        execute(items, "INSERT INTO items VALUES (1, 'a', 1)")
        wait(lambda: count() >= 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        wait(lambda: not active())  # the replication connection closed, the slot kept
        execute(items, "INSERT INTO items VALUES (2, 'b', 2)")  # while no worker runs
        proc = start()
        wait(lambda: count() >= 2 and active())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ids = [e["key"]["id"] for e in read_events(log, [TOPIC])]
    assert ids == [1, 2]  # nothing lost, nothing repeated after a clean stop
