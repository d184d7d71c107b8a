"""Crash safety of the whole deployment: `kit cdc run --no-sink` (PostgreSQL capture) and
`kit cdc run --no-capture` (Kafka sink) are separate OS processes, each killed with SIGKILL
several times while a writer changes the source; after clean restarts and a drain,
`kit cdc verify` finds no difference and `kit cdc status` / `kit cdc slot` report the pipeline."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from cdc.capture.postgres import enable_capture, snapshot_progress
from cdc.transport.kafka import KafkaTransport
from kit.commands.cdc import cli
from kitcore.db import make_engine
from tests.integration.cdc_pg.helpers import confirmed_flush, execute, scalar
from tests.integration.cdc_pg.test_pg_kafka_crash import WRITER
from tests.integration.cdc_pg.test_pg_snapshot import _lsn

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
MAPPING = """
service = "svc"

[[tables]]
source = "products"
target = "catalog"
key = ["id"]

[tables.columns]
id = "id"
title = { from = "name", transform = "upper" }
qty = "qty"
price = "price"
"""


def test_capture_and_sink_processes_killed_repeatedly_still_converge(
    pg_url, kafka_config, tmp_path
):
    execute(
        pg_url,
        "CREATE TABLE products (id int PRIMARY KEY, name text, qty int, price numeric(12, 2))",
        "INSERT INTO products SELECT g, 'p' || g, g % 7, g * 1.25 FROM generate_series(1, 600) g",
    )
    enable_capture(pg_url, ["products"])
    (tmp_path / "mapping.toml").write_text(MAPPING)
    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    target = make_engine(target_url)
    with target.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE catalog (id INTEGER PRIMARY KEY, title TEXT, qty INTEGER, "
                "price NUMERIC(12, 2))"
            )
        )
    prefix = f"crash{uuid.uuid4().hex[:6]}"
    slot = f"crash_{uuid.uuid4().hex[:6]}"
    topic = f"{prefix}.public.products"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CDC_SOURCE_URL": pg_url,
        "CDC_TARGET_URL": target_url,
        "CDC_MAPPING": str(tmp_path / "mapping.toml"),
        "CDC_TOPIC_PREFIX": prefix,
        "CDC_PG_SLOT": slot,
        "CDC_PARTITIONS": "3",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
        "KAFKA_SESSION_TIMEOUT_MS": str(kafka_config.session_timeout_ms),
        "KAFKA_HEARTBEAT_INTERVAL_MS": str(kafka_config.heartbeat_interval_ms),
        "KAFKA_REQUEST_TIMEOUT_MS": "15000",
    }
    kit = [sys.executable, "-m", "kit.commands.cdc"]
    procs: list[subprocess.Popen] = []

    def spawn(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    def applied() -> int:
        with target.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT coalesce(sum(next_offset), 0) FROM _cdc_sink_offsets")
                ).scalar()
            )

    rng = random.Random(5)
    kills = {"capture": 0, "sink": 0}
    transport = KafkaTransport(kafka_config)
    try:
        writer = spawn(sys.executable, "-c", WRITER, pg_url, "8")
        workers = {"capture": None, "sink": None}
        args = {"capture": ("run", "--no-sink"), "sink": ("run", "--no-capture")}
        while writer.poll() is None:
            for name, proc in workers.items():
                if proc is None or proc.poll() is not None:
                    workers[name] = spawn(*kit, *args[name])
            time.sleep(rng.uniform(0.8, 1.6))
            victims = rng.choice([("capture",), ("sink",), ("capture", "sink")])
            for name in victims:
                proc = workers[name]
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills[name] += 1
        assert writer.returncode == 0
        assert kills["capture"] >= 2 and kills["sink"] >= 2, kills
        # clean runs until everything written is captured and applied, then SIGTERM
        for name, proc in workers.items():
            if proc is None or proc.poll() is not None:
                workers[name] = spawn(*kit, *args[name])
        wal = _lsn(scalar(pg_url, "SELECT pg_current_wal_lsn()::text"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name, proc in workers.items():
                assert proc.poll() is None, f"{name} worker died"
            if (
                confirmed_flush(pg_url, slot) >= wal
                and all(p.status == "done" for p in snapshot_progress(pg_url, slot))
                and applied() >= sum(transport.end_offsets([topic]).values())
            ):
                break
            time.sleep(0.2)
        else:
            raise TimeoutError("pipeline did not catch up")
        for proc in workers.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in workers.items():
            assert proc.wait(timeout=20) == 0, f"{name} did not stop cleanly"
        verified = subprocess.run(
            [*kit, "verify"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "source and target match" in verified.stdout
        with target.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM catalog")).scalar() > 500
        # status and slot commands against the same pipeline (in-process)
        runner = CliRunner()
        status = runner.invoke(cli, ["status"], env=env)
        assert status.exit_code == 0, status.output
        assert "slot lsn" in status.output and "done" in status.output
        slots = runner.invoke(cli, ["slot", "list"], env=env)
        assert slots.exit_code == 0 and slot in slots.output, slots.output
        dropped = runner.invoke(cli, ["slot", "drop", slot], env=env)
        assert dropped.exit_code == 0, dropped.output
        assert slot not in runner.invoke(cli, ["slot", "list"], env=env).output
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        transport.close()
        target.dispose()
