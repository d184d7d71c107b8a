"""One sink per consumer group on the embedded log, as one capture worker per source: a
second `kit cdc run --no-capture` of the same group is refused while the first runs, and may
start once the first is gone (even killed with SIGKILL: the kernel drops its lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.cdc.test_cdc_crash import ROOT, _kill, _spawn
from tests.unit.cdc.synthetic import make_target, write_mapping

pytestmark = pytest.mark.integration


def _wait_started(proc: subprocess.Popen, lock_dir: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        if lock_dir.exists() and any(lock_dir.iterdir()):
            time.sleep(0.3)  # the consumer opens after the lock file appears
            return
        time.sleep(0.05)
    raise AssertionError("the first sink did not start")


def test_a_second_sink_of_a_group_is_refused_until_the_first_is_gone(tmp_path: Path) -> None:
    make_target(tmp_path / "tgt.db").dispose()
    write_mapping(tmp_path / "m.toml")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CDC_TARGET_URL": f"sqlite:///{tmp_path / 'tgt.db'}",
        "CDC_MAPPING": str(tmp_path / "m.toml"),
        "CDC_LOG_DIR": str(tmp_path / "log"),
    }
    procs: list[subprocess.Popen] = []
    try:
        first = _spawn(env, "--no-capture")
        procs.append(first)
        _wait_started(first, tmp_path / "log" / "groups")
        second = _spawn(env, "--no-capture")
        procs.append(second)
        _, err = second.communicate(timeout=60)
        assert second.returncode != 0
        assert "already has an active member" in err
        assert first.poll() is None  # the first one runs on, untouched
        _kill(first)  # SIGKILL: no clean-up, the kernel releases the lock
        third = _spawn(env, "--no-capture")
        procs.append(third)
        time.sleep(2.0)
        assert third.poll() is None, third.communicate()[1]
        third.send_signal(signal.SIGTERM)
        _, err = third.communicate(timeout=30)
        assert third.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
