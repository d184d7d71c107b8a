"""Crash safety PostgreSQL → Kafka → service database: the capture worker is a separate OS
process killed with SIGKILL at random moments (snapshot or stream) during a
continuous write workload; after restarts and a drain the verifier finds no difference."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cdc.capture.postgres import enable_capture, snapshot_progress
from cdc.transport.kafka import KafkaTransport
from tests.integration.cdc_pg.helpers import confirmed_flush, execute, scalar
from tests.integration.cdc_pg.test_pg_snapshot import _apply_and_verify, _lsn

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

CAPTURE = textwrap.dedent("""
    import sys
    from cdc.capture.postgres import PgCaptureConfig, run_capture
    from cdc.transport.kafka import KafkaConfig, KafkaTransport
    url, bootstrap = sys.argv[1], sys.argv[2]
    transport = KafkaTransport(KafkaConfig(bootstrap_servers=bootstrap, partitions=3, linger_ms=0,
                                           request_timeout_ms=15000))
    run_capture(url, transport, PgCaptureConfig(tables=("products",), snapshot_chunk=40,
                                                batch_size=200, idle_wait_s=0.05,
                                                status_interval_s=1.0))
""")

WRITER = textwrap.dedent("""
    import random, sys, time
    import psycopg2
    url, seconds = sys.argv[1], float(sys.argv[2])
    rng = random.Random(7)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pid = rng.randint(1, 900)
        k = rng.random()
        if k < 0.5:
            cur.execute("UPDATE products SET qty = qty + 1, price = price + 0.01 WHERE id = %s", (pid,))
        elif k < 0.8:
            cur.execute("INSERT INTO products VALUES (%s, %s, 0, 1.00) ON CONFLICT DO NOTHING",
                        (pid, "w%d" % pid))
        elif k < 0.9:
            cur.execute("UPDATE products SET id = id + 1000 WHERE id = %s AND NOT EXISTS "
                        "(SELECT 1 FROM products WHERE id = %s)", (pid, pid + 1000))
        else:
            cur.execute("DELETE FROM products WHERE id = %s", (pid,))
        time.sleep(0.002)
""")


def test_capture_killed_repeatedly_still_delivers_everything_through_kafka(
    pg_url, kafka_config, tmp_path
):
    execute(
        pg_url,
        "CREATE TABLE products (id int PRIMARY KEY, name text, qty int, price numeric(12, 2))",
        "INSERT INTO products SELECT g, 'p' || g, g % 7, g * 1.25 FROM generate_series(1, 600) g",
    )
    enable_capture(pg_url, ["products"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bootstrap = kafka_config.bootstrap_servers
    rng = random.Random(3)
    procs: list[subprocess.Popen] = []

    def spawn(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", *args], cwd=ROOT, env=env)
        procs.append(proc)
        return proc

    try:
        writer = spawn(WRITER, pg_url, "8")
        kills = 0
        while writer.poll() is None:
            capture = spawn(CAPTURE, pg_url, bootstrap)
            time.sleep(rng.uniform(0.8, 2.0))
            if capture.poll() is None:
                capture.send_signal(signal.SIGKILL)
                capture.wait()
                kills += 1
        assert writer.returncode == 0
        assert kills >= 3
        # final, clean run: drain everything written, then stop with SIGTERM
        capture = spawn(CAPTURE, pg_url, bootstrap)
        target = _lsn(scalar(pg_url, "SELECT pg_current_wal_lsn()::text"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            streaming = scalar(
                pg_url, "SELECT active FROM pg_replication_slots WHERE slot_name = 'strangler_cdc'"
            )
            if (
                streaming
                and confirmed_flush(pg_url, "strangler_cdc") >= target
                and all(p.status == "done" for p in snapshot_progress(pg_url, "strangler_cdc"))
            ):
                break
            assert capture.poll() is None, "capture worker died"
            time.sleep(0.1)
        else:
            raise TimeoutError("capture did not catch up")
        capture.send_signal(signal.SIGTERM)
        assert capture.wait(timeout=20) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    (progress,) = snapshot_progress(pg_url, "strangler_cdc")
    assert progress.status == "done"
    transport = KafkaTransport(kafka_config)
    try:
        report = _apply_and_verify(transport, pg_url, tmp_path, wait_for_join=True)
    finally:
        transport.close()
    assert report.ok, report.tables
    assert report.tables[0].source_rows > 500
