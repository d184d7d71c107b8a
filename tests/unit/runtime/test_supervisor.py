"""Process supervision with real OS processes: start, health-check, idempotent up, clean down,
never a signal to a pid that is not the recorded process, and the CDC watchdog's restarts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kit.runtime.procs import (
    ProcessSpec,
    RunDir,
    is_running,
    proc_start_ticks,
    stop_record,
)
from kit.runtime.supervisor import StartFailed, Supervisor, stop_all
from kit.runtime.watchdog import WantedWorker, Watchdog, process_name, read_state
from kitcore.net import free_port

PY = sys.executable


def http_server(name: str, root: Path, kind: str = "app") -> ProcessSpec:
    """A stdlib HTTP server whose /readyz is a file: 200 once it listens."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "readyz").write_text("ok")
    port = free_port()
    return ProcessSpec(
        name=name,
        argv=(PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)),
        ready_url=f"http://127.0.0.1:{port}/readyz",
        ready_timeout_s=15,
        kind=kind,
        bind=f"127.0.0.1:{port}",
    )


@pytest.fixture
def rundir(tmp_path: Path) -> Iterator[RunDir]:
    rd = RunDir(tmp_path / "run", tmp_path / "log")
    try:
        yield rd
    finally:
        stop_all(rd, timeout_s=3)  # whatever a failing test left behind


def alive(pid: int) -> bool:
    return proc_start_ticks(pid) is not None


def test_up_starts_each_process_once_and_down_stops_them_all(
    tmp_path: Path, rundir: RunDir
) -> None:
    specs = [http_server("web-a", tmp_path / "a"), http_server("front", tmp_path / "b", "proxy")]
    supervisor = Supervisor(specs, rundir)

    first = supervisor.up()
    assert [r.outcome for r in first] == ["started", "started"]
    pids = {r.name: r.pid for r in first}
    assert all(alive(pid) for pid in pids.values())
    assert {p.name for p in rundir.run_dir.glob("*.json")} == {"web-a.json", "front.json"}
    assert "starting web-a" in rundir.log_path("web-a").read_text()

    again = supervisor.up()
    assert [r.outcome for r in again] == ["already running", "already running"]
    assert {r.name: r.pid for r in again} == pids

    stopped = supervisor.down(timeout_s=5)
    assert [s.name for s in stopped] == ["front", "web-a"]  # proxy stage before apps
    assert all(s.outcome == "stopped" for s in stopped)
    assert not any(alive(pid) for pid in pids.values())
    assert list(rundir.run_dir.glob("*.json")) == []


def test_a_process_that_dies_at_start_fails_with_its_log(tmp_path: Path, rundir: RunDir) -> None:
    spec = ProcessSpec(
        name="broken",
        argv=(PY, "-c", "import sys; print('cannot bind: address in use'); sys.exit(3)"),
        ready_url=f"http://127.0.0.1:{free_port()}/readyz",
    )
    with pytest.raises(StartFailed, match="cannot bind: address in use"):
        Supervisor([spec], rundir).up()


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "SO_REUSEPORT"])
def test_an_app_whose_port_is_taken_is_refused_before_it_starts(
    tmp_path: Path, rundir: RunDir, reuse_port: bool
) -> None:
    # gunicorn runs with --reuse-port, so a leftover server holding the port with
    # SO_REUSEPORT would not make it fail: it would share the port and split the traffic.
    spec = http_server("web-a", tmp_path / "a")
    port = int(spec.bind.rsplit(":", 1)[1])  # type: ignore[union-attr]
    with socket.socket() as squatter:
        if reuse_port:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(StartFailed, match=f"web-a: 127.0.0.1:{port} is already in use"):
            Supervisor([spec], rundir).up()
    assert rundir.records() == []  # nothing was started
    assert [r.outcome for r in Supervisor([spec], rundir).up()] == ["started"]  # once free


def test_a_recycled_pid_is_never_signalled(tmp_path: Path, rundir: RunDir) -> None:
    stranger = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    try:
        spec = http_server("web", tmp_path / "w")
        (result,) = Supervisor([spec], rundir).up()
        record = rundir.read("web")
        assert record is not None
        # the record now points at another process (as after a reboot and pid reuse)
        forged = replace(record, pid=stranger.pid)
        assert not is_running(forged)
        assert stop_record(forged, timeout_s=1).outcome == "not running"
        assert stranger.poll() is None
        stop_all(rundir, timeout_s=5)
        assert not alive(result.pid)
    finally:
        stranger.kill()
        stranger.wait()


def test_a_process_ignoring_sigterm_is_killed_with_its_group(
    tmp_path: Path, rundir: RunDir
) -> None:
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        "print('pid' + 'of-child', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    spec = ProcessSpec(name="stubborn", argv=(PY, "-c", script))
    (result,) = Supervisor([spec], rundir).up()
    log = rundir.log_path("stubborn")
    deadline = time.monotonic() + 10
    while "pidof-child " not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(log.read_text().split("pidof-child ")[1].split()[0])
    (stopped,) = stop_all(rundir, timeout_s=0.5)
    assert stopped.outcome == "killed"
    time.sleep(0.1)
    assert not alive(result.pid) and not alive(child_pid)


def test_watchdog_starts_restarts_and_retires_workers(tmp_path: Path, rundir: RunDir) -> None:
    wanted = [WantedWorker("sink:catalog", (PY, "-c", "import time; time.sleep(60)"))]
    lines: list[str] = []
    dog = Watchdog(rundir, lambda: list(wanted), echo=lines.append, backoff_s=0.2)

    dog.tick()
    name = process_name("sink:catalog")
    assert name == "cdc-sink-catalog"
    first = rundir.running(name)
    assert first is not None and first.kind == "cdc"
    dog.tick()
    assert rundir.running(name).pid == first.pid  # type: ignore[union-attr]

    os.kill(first.pid, signal.SIGKILL)  # a crash
    deadline = time.monotonic() + 5
    while is_running(first) and time.monotonic() < deadline:
        time.sleep(0.02)
    restarted = None
    deadline = time.monotonic() + 5
    while restarted is None and time.monotonic() < deadline:
        dog.tick()
        restarted = rundir.running(name)
        time.sleep(0.05)
    assert restarted is not None and restarted.pid != first.pid
    assert read_state(rundir)["restarts"] == 1  # type: ignore[index]

    worker = wanted.pop()  # the playbook no longer wants it
    dog.tick()
    assert rundir.running(name) is None
    assert not alive(restarted.pid)
    assert any("no longer wanted" in line for line in lines)

    wanted.append(worker)  # wanted again: started at once, and that is no crash restart
    dog.tick()
    again = rundir.running(name)
    assert again is not None and again.pid != restarted.pid
    assert read_state(rundir)["restarts"] == 1  # type: ignore[index]  # still the one crash
    dog.stop_all()
    assert not alive(again.pid)


def test_watchdog_keeps_workers_when_the_playbook_cannot_be_read(rundir: RunDir) -> None:
    calls = {"n": 0}

    def wanted() -> list[WantedWorker]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("state database locked")
        return [WantedWorker("capture:monolith", (PY, "-c", "import time; time.sleep(60)"))]

    dog = Watchdog(rundir, wanted, echo=lambda _line: None)
    dog.tick()
    record = rundir.running("cdc-capture-monolith")
    dog.tick()
    assert record is not None and is_running(record)
    assert dog.errors == 1 and "locked" in (dog.last_error or "")
    dog.stop_all()
    assert not is_running(record)


def test_a_tcp_ready_check_needs_no_readiness_route(tmp_path: Path, rundir: RunDir) -> None:
    spec = http_server("plain", tmp_path / "p")
    (tmp_path / "p" / "readyz").unlink()  # the app has no readiness route at all
    tcp = replace(spec, ready_url=f"tcp://{spec.bind}")
    (result,) = Supervisor([tcp], rundir).up()
    assert result.outcome == "started"
    assert Supervisor([tcp], rundir).status()[0][2] is True


def test_an_http_ready_check_waits_for_the_declared_status(tmp_path: Path, rundir: RunDir) -> None:
    spec = replace(http_server("strict", tmp_path / "s"), ready_status=204, ready_timeout_s=1.5)
    with pytest.raises(StartFailed, match=r"did not answer http://\S+/readyz with 204 within 2s"):
        Supervisor([spec], rundir).up()


def test_an_external_app_is_checked_never_started_nor_stopped(
    tmp_path: Path, rundir: RunDir
) -> None:
    theirs = http_server("theirs", tmp_path / "t")
    other = RunDir(tmp_path / "their-run", tmp_path / "their-log")  # the team runs it
    (started,) = Supervisor([theirs], other).up()
    try:
        external = ProcessSpec(
            name="theirs", argv=(), external=True, ready_url=theirs.ready_url, ready_timeout_s=2
        )
        (result,) = Supervisor([external], rundir).up()
        assert (result.outcome, result.pid) == ("external", 0)
        assert rundir.records() == []
        assert Supervisor([external], rundir).status()[0][1:] == (None, True)
        assert Supervisor([external], rundir).down() == []
        assert alive(started.pid)
    finally:
        stop_all(other, timeout_s=3)
    with pytest.raises(StartFailed, match="theirs is external .* did not answer"):
        Supervisor([external], rundir).up()


def test_a_missing_interpreter_fails_the_start_with_its_path(
    tmp_path: Path, rundir: RunDir
) -> None:
    spec = replace(http_server("gone", tmp_path / "g"), argv=(str(tmp_path / "venv/bin/python"),))
    with pytest.raises(StartFailed, match=r"gone: cannot run \S+/venv/bin/python"):
        Supervisor([spec], rundir).up()


def test_watchdog_restarts_a_crashed_app_but_not_an_external_or_a_stopped_one(
    tmp_path: Path, rundir: RunDir
) -> None:
    app = http_server("catalog", tmp_path / "catalog")
    external = replace(http_server("legacy", tmp_path / "legacy"), restart=False)
    stopped = http_server("reports", tmp_path / "reports")  # `kit down` left no record
    lines: list[str] = []
    dog = Watchdog(
        rundir, lambda: [], lambda: [app, external, stopped], echo=lines.append, backoff_s=0.2
    )
    first, ext = (Supervisor([app, external], rundir).up()[i] for i in (0, 1))
    killed = [rundir.read("catalog"), rundir.read("legacy")]
    for record in killed:
        os.kill(record.pid, signal.SIGKILL)  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while any(is_running(r) for r in killed) and time.monotonic() < deadline:  # type: ignore[arg-type]
        time.sleep(0.02)
    restarted = None
    while restarted is None and time.monotonic() < deadline:
        dog.tick()
        restarted = rundir.running("catalog")
        time.sleep(0.05)
    assert restarted is not None and restarted.pid != first.pid
    assert any("app catalog restarted" in line for line in lines)
    assert rundir.running("legacy") is None and rundir.read("reports") is None
    assert read_state(rundir)["restarts"] == 1  # type: ignore[index]
    stop_all(rundir)
    assert not alive(restarted.pid) and not alive(ext.pid)
