"""Detached OS processes with pid records that prove ownership before any signal is sent.

`kit up` starts servers in their own session (so they outlive the command) and writes one
JSON record per process in `var/run/<name>.json`: pid, the kernel's start time of that pid
(`/proc/<pid>/stat` field 22) and the command line. `kit down` signals a pid only when both
still match, so a recycled pid that now belongs to someone else is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class ProcessSpec:
    """What to start: a name (also the log and record file name), argv, env and a readiness
    check: `ready_url` `http://…` answering `ready_status` (None: any 2xx), or `tcp://host:port`
    accepting a connection. An `external` process is never started or stopped, only checked."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    ready_url: str | None = None
    ready_timeout_s: float = 30.0
    kind: str = "app"
    bind: str | None = None  # `host:port` it listens on: checked free before it starts
    ready_status: int | None = None
    external: bool = False  # the team runs it: checked for readiness, never started or stopped
    restart: bool = True  # the watchdog restarts it when it crashes (never an external app)

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _NAME_CHARS:
            raise ValueError(f"name must be lower-case letters, digits, - _ . : {self.name!r}")
        if self.external and (self.argv or not self.ready_url):
            raise ValueError(f"external {self.name!r} has no argv and needs a ready_url")
        if not self.argv and not self.external:
            raise ValueError(f"argv of {self.name!r} must not be empty")
        if self.ready_timeout_s <= 0:
            raise ValueError(f"ready_timeout_s of {self.name!r} must be positive")


@dataclass(frozen=True)
class ProcessRecord:
    """A started process as written to var/run/<name>.json."""

    name: str
    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    started_at: float
    log_path: str
    kind: str = "app"
    ready_url: str | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "argv": list(self.argv)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        data = json.loads(text)
        data["argv"] = tuple(data["argv"])
        return cls(**data)


def proc_start_ticks(pid: int) -> int | None:
    """Kernel start time of `pid` in clock ticks since boot, or None if no such process.

    A zombie counts as gone: it runs nothing and will be reaped by its parent.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces: split after the last ")".
    rest = raw[raw.rindex(")") + 2 :].split()
    state, ticks = rest[0], rest[19]
    if state in ("Z", "X"):
        return None
    return int(ticks)


def proc_cmdline(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def is_running(record: ProcessRecord) -> bool:
    """True only when the pid is alive *and* is the very process the record describes."""
    _reap(record.pid)
    ticks = proc_start_ticks(record.pid)
    if ticks is None or ticks != record.start_ticks:
        return False
    return proc_cmdline(record.pid) == record.argv


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie (no-op otherwise)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDir:
    """The folder of pid records (var/run) and the folder of logs (var/log)."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.log_dir = Path(log_dir)

    def record_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def read(self, name: str) -> ProcessRecord | None:
        path = self.record_path(name)
        try:
            return ProcessRecord.from_json(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # a torn or foreign file proves nothing: forget it
            return None

    def records(self) -> list[ProcessRecord]:
        if not self.run_dir.is_dir():
            return []
        found = [self.read(p.stem) for p in sorted(self.run_dir.glob("*.json"))]
        return [r for r in found if r is not None]

    def write(self, record: ProcessRecord) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.record_path(record.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(record.to_json())
        os.replace(tmp, path)

    def forget(self, name: str) -> None:
        self.record_path(name).unlink(missing_ok=True)

    def running(self, name: str) -> ProcessRecord | None:
        """The record of `name` if that exact process is alive; stale records are removed."""
        record = self.read(name)
        if record is None:
            return None
        if is_running(record):
            return record
        self.forget(name)
        return None


class PortInUse(Exception):
    """A process's listening address is taken by a process kit does not know about."""


def ensure_port_free(bind: str, name: str) -> None:
    """Refuse to start `name` on `bind` (`host:port`) while anything listens there.

    A plain bind (without SO_REUSEPORT) fails whenever another socket holds the address, even
    one that set SO_REUSEPORT; gunicorn with `--reuse-port` would instead share the port with a
    leftover server and split the traffic between old and new code.
    """
    host, _, port = bind.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            raise PortInUse(
                f"{name}: {bind} is already in use by a process kit did not start ({exc.strerror});"
                " stop it first (`ss -ltnp` names it), or pick another port in the manifest"
            ) from None


def start_detached(
    spec: ProcessSpec, rundir: RunDir, base_env: Mapping[str, str] | None = None
) -> ProcessRecord:
    """Start `spec` in a new session, output appended to its log; record it; return the record.
    Raises PortInUse (nothing started) when its `bind` address is taken."""
    if spec.bind is not None:
        ensure_port_free(spec.bind, spec.name)
    rundir.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = rundir.log_path(spec.name)
    env = {**(os.environ if base_env is None else base_env), **spec.env}
    env.setdefault("PYTHONUNBUFFERED", "1")
    # 0600: a process's log may hold what its users sent (the proxy logs no header values,
    # but an app's traceback may); the mode is set on an existing file too.
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n=== {stamp} starting {spec.name}: {' '.join(spec.argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(spec.argv),
            env=env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    ticks = None
    for _ in range(50):  # /proc entry appears with the fork; argv after exec
        ticks = proc_start_ticks(process.pid)
        if ticks is not None and proc_cmdline(process.pid) == tuple(spec.argv):
            break
        if process.poll() is not None:
            break
        time.sleep(0.01)
    record = ProcessRecord(
        name=spec.name,
        pid=process.pid,
        start_ticks=ticks or 0,
        argv=tuple(spec.argv),
        started_at=time.time(),
        log_path=str(log_path),
        kind=spec.kind,
        ready_url=spec.ready_url,
    )
    rundir.write(record)
    return record


@dataclass(frozen=True)
class StopResult:
    name: str
    pid: int
    outcome: str  # "stopped", "killed", "not running", "not ours"


def stop_record(record: ProcessRecord, timeout_s: float = 10.0) -> StopResult:
    """SIGTERM the process (it stops its own children), wait, then SIGKILL its whole group.

    Only a pid whose start time and command line still match the record is signalled; the
    group is signalled only when it is the group that process leads (we started it with
    its own session, so pgid == pid).
    """
    return stop_records([record], timeout_s)[0]


def stop_records(records: list[ProcessRecord], timeout_s: float = 10.0) -> list[StopResult]:
    """`stop_record` for several processes at once: SIGTERM them all, then wait for them all."""
    outcomes: dict[int, str] = {}
    termed: list[ProcessRecord] = []
    for i, record in enumerate(records):
        if is_running(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGTERM)
            termed.append(record)
        elif record.start_ticks and _group_alive(record.pid) and _group_is_ours(record):
            # The leader is gone but its group lingers (e.g. orphaned gunicorn workers).
            _kill_group(record.pid, timeout_s)
            outcomes[i] = "killed"
        else:
            outcomes[i] = "not running"
    deadline = time.monotonic() + timeout_s
    for record in termed:
        gone = _wait_gone(record, max(0.0, deadline - time.monotonic()))
        if gone and not _group_alive(record.pid):
            outcome = "stopped"
        else:
            _kill_group(record.pid, timeout_s)
            outcome = "stopped" if gone else "killed"
        outcomes[records.index(record)] = outcome
    return [StopResult(r.name, r.pid, outcomes[i]) for i, r in enumerate(records)]


def _group_is_ours(record: ProcessRecord) -> bool:
    """Some member of group `record.pid` was started after the recorded leader (so: its child)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != record.pid:
                continue
        except ProcessLookupError:
            continue
        ticks = proc_start_ticks(int(entry.name))
        if ticks is not None and ticks >= record.start_ticks:
            return True
    return False


def _wait_gone(record: ProcessRecord, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(record):
            return True
        time.sleep(0.05)
    return not is_running(record)


def _kill_group(pgid: int, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _group_alive(pgid):
        _reap(pgid)
        time.sleep(0.05)


def tail(path: str | Path, lines: int = 20) -> str:
    """The last lines of a log, for error messages that say why a process died."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
