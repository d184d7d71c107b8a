"""Crash safety: capture and sink as separate OS processes, kill -9 at random moments.

A third process writes continuously to the source. Capture and sink are killed with SIGKILL
several times each and restarted; after the writer stops and both drain, the verifier must
report zero differences (nothing lost, nothing applied twice into a wrong state).
"""

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

from cdc.capture.sqlite import enable_capture, request_snapshot
from tests.unit.cdc.synthetic import insert_product, make_source, make_target, write_mapping

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

WRITER = textwrap.dedent("""
    import random, sqlite3, sys, time
    db, seconds = sys.argv[1], float(sys.argv[2])
    rng = random.Random(11)
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        pid = rng.randint(1, 400)
        conn.execute("BEGIN IMMEDIATE")
        k = rng.random()
        if k < 0.45:
            conn.execute("UPDATE products SET price_cents = price_cents + 1, name = 'N' || ? "
                         "WHERE id = ?", (n, pid))
        elif k < 0.6:
            conn.execute("DELETE FROM products WHERE id = ?", (pid,))
        elif k < 0.85:
            conn.execute("INSERT OR REPLACE INTO products (id, sku, name, price_cents) "
                         "VALUES (?, ?, 'W', ?)", (pid, None if pid % 13 == 0 else f"W{n}", n))
        else:
            conn.execute("INSERT OR REPLACE INTO customers (id, email, full_name) "
                         "VALUES (?, ?, 'Wri Ter')", (pid, f"u{pid}@x.com"))
        conn.execute("COMMIT")
        n += 1
        time.sleep(0.002)
    print(n)
""")


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kit.commands.cdc", "run", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_pipeline_survives_repeated_kill_9_of_capture_and_sink(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src.db")
    for i in range(1, 201):
        insert_product(src, i)
    make_target(tmp_path / "tgt.db").dispose()
    write_mapping(tmp_path / "m.toml")
    enable_capture(src, ["products", "customers"])
    request_snapshot(src, ["products", "customers"])
    src.dispose()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CDC_SOURCE_URL": f"sqlite:///{tmp_path / 'src.db'}",
        "CDC_TARGET_URL": f"sqlite:///{tmp_path / 'tgt.db'}",
        "CDC_MAPPING": str(tmp_path / "m.toml"),
        "CDC_LOG_DIR": str(tmp_path / "log"),
    }
    kills = crash_and_verify(
        env, [WRITER, str(tmp_path / "src.db"), "14"], rounds=6, seed=5, min_writes=500
    )
    assert kills == {"capture": 3, "sink": 3}


def crash_and_verify(
    env: dict[str, str],
    writer: list[str],
    *,
    rounds: int,
    seed: int,
    batch: str = "50",
    min_writes: int = 300,
) -> dict[str, int]:
    """Run a writer (`python -c *writer`), capture and sink as processes; SIGKILL capture and
    sink in turn `rounds` times and restart them; stop them cleanly, drain, and assert that
    `kit cdc verify` finds source and target equal. Returns the kills per worker."""
    rng = random.Random(seed)
    procs: list[subprocess.Popen] = []
    try:
        proc = subprocess.Popen([sys.executable, "-c", *writer], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        workers = {
            "capture": _spawn(env, "--no-sink", "--batch", batch),
            "sink": _spawn(env, "--no-capture", "--batch", batch),
        }
        procs += workers.values()
        kills = {"capture": 0, "sink": 0}
        for i in range(rounds):
            time.sleep(rng.uniform(0.8, 2.0))
            name = "capture" if i % 2 == 0 else "sink"
            _kill(workers[name])
            kills[name] += 1
            flag = "--no-sink" if name == "capture" else "--no-capture"
            workers[name] = _spawn(env, flag, "--batch", batch)
            procs.append(workers[name])
        writes = int(proc.communicate(timeout=60)[0].strip())
        assert writes > min_writes
        # Let the last workers run a moment, then stop them cleanly with SIGTERM.
        time.sleep(0.5)
        for worker in workers.values():
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=30)
            assert worker.returncode == 0, err
        # Drain what is left: capture first, then the sink.
        for args in (("--no-sink",), ("--no-capture",)):
            final = _spawn(env, *args, "--exit-when-idle")
            procs.append(final)
            _, err = final.communicate(timeout=60)
            assert final.returncode == 0, err
        result = subprocess.run(
            [sys.executable, "-m", "kit.commands.cdc", "verify"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "source and target match" in result.stdout
        return kills
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
