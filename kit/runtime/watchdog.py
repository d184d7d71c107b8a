"""The watchdog: keeps the apps `kit up` started and exactly the CDC workers the playbook wants
running, restarting crashes.

`kit up` starts it as a process (`python -m kit.runtime.watchdog --manifest PATH`). About
once a second it asks the playbook which workers are wanted (`desired_workers(manifest)`),
starts each wanted one that is not running (a crashed one is restarted, with a short
back-off when it keeps crashing), and sends SIGTERM to running ones no longer wanted.
Worker positions are durable, so a restart continues where the crashed worker stopped.
Apps (the monolith and each service, `ProcessSpec.restart`) are restarted the same way when
their record says `kit up` started them but the process is gone (a `kill -9`, a crash):
leftovers of their process group (orphaned gunicorn workers holding the port) are ended
first; an app `kit down` stopped has no record and is left alone.
On SIGTERM the watchdog stops its workers, then exits. Counters go to
`var/run/watchdog-state.json` for `kit up --status` and the demo summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.runtime.procs import (
    PortInUse,
    ProcessSpec,
    RunDir,
    is_running,
    start_detached,
    stop_record,
    stop_records,
)

WORKER_PREFIX = "cdc-"
STATE_FILE = "watchdog-state.json"


@dataclass(frozen=True)
class WantedWorker:
    """A worker the playbook wants: its playbook name and the command that runs it."""

    name: str
    argv: tuple[str, ...]


def process_name(worker: str) -> str:
    """`sink:catalog:reverse` → `cdc-sink-catalog-reverse` (a file-safe record/log name)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in worker.lower())
    return WORKER_PREFIX + safe


@dataclass
class _Track:
    starts: int = 0
    last_start: float = 0.0
    crashes: int = 0


@dataclass
class Watchdog:
    """Reconciles running worker processes with `wanted()`; one `tick()` per poll."""

    rundir: RunDir
    wanted: Callable[[], Sequence[WantedWorker]]
    apps: Callable[[], Sequence[ProcessSpec]] = tuple
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    echo: Callable[[str], None] = print
    backoff_s: float = 1.0
    max_backoff_s: float = 10.0
    tracks: dict[str, _Track] = field(default_factory=dict)
    errors: int = 0
    last_error: str | None = None
    restarts: int = 0

    def _may_restart(self, name: str, label: str, now: float) -> bool:
        """Backoff: the first restart at once, then doubling waits (capped) while it crashes."""
        track = self.tracks.setdefault(name, _Track())
        if track.starts:
            wait = min(self.max_backoff_s, self.backoff_s * 2 ** min(track.crashes, 6))
            if now - track.last_start < wait:
                return False
            track.crashes += 1
            self.restarts += 1
            self.echo(f"watchdog: {label} is not running; restart #{track.crashes}")
        else:
            self.echo(f"watchdog: starting {label}")
        track.starts += 1
        track.last_start = now
        return True

    def tick_apps(self, now: float) -> None:
        """Restart each app `kit up` started (it has a record) whose process is gone."""
        for spec in self.apps():
            record = self.rundir.read(spec.name)
            if spec.external or not spec.restart or record is None or is_running(record):
                continue
            track = self.tracks.setdefault(spec.name, _Track(starts=1, last_start=-1e9))
            if not self._may_restart(spec.name, f"app {spec.name} (pid {record.pid})", now):
                continue
            stop_records([record], timeout_s=5.0)  # orphaned workers of its group, if any
            try:
                new = start_detached(spec, self.rundir)
            except PortInUse as exc:
                self.echo(f"watchdog: app {spec.name} not restarted yet: {exc}")
                continue
            self.echo(f"watchdog: app {spec.name} restarted, pid {new.pid}")
            track.last_start = now

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        try:
            self.tick_apps(now)
        except Exception as exc:  # noqa: BLE001 - never let one app stop the CDC watch
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.echo(f"watchdog: app check failed: {self.last_error}")
        try:
            wanted = {process_name(w.name): w for w in self.wanted()}
        except Exception as exc:  # noqa: BLE001 - keep the current workers; retry next tick
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.echo(f"watchdog: cannot read the wanted workers: {self.last_error}")
            return
        for name, worker in wanted.items():
            if self.rundir.running(name) is not None:
                continue
            if not self._may_restart(name, worker.name, now):
                continue
            spec = ProcessSpec(name=name, argv=worker.argv, env=self.env, cwd=self.cwd, kind="cdc")
            record = start_detached(spec, self.rundir)
            self.echo(f"watchdog: {worker.name} pid {record.pid}")
        for record in self.rundir.records():
            if record.kind == "cdc" and record.name not in wanted:
                self.echo(f"watchdog: {record.name} no longer wanted; stopping pid {record.pid}")
                stop_record(record)
                self.rundir.forget(record.name)
                self.tracks.pop(record.name, None)  # wanted again later: a fresh start
        self.write_state()

    def stop_all(self) -> None:
        for record in self.rundir.records():
            if record.kind == "cdc":
                result = stop_record(record)
                self.rundir.forget(record.name)
                self.echo(f"watchdog: {record.name} pid {record.pid} {result.outcome}")
        self.write_state()

    def state(self) -> dict[str, Any]:
        return {
            "workers": {
                name: {"starts": t.starts, "restarts": t.crashes}
                for name, t in sorted(self.tracks.items())
            },
            "restarts": self.restarts,
            "errors": self.errors,
            "last_error": self.last_error,
            "updated_at": time.time(),
        }

    def write_state(self) -> None:
        path = self.rundir.run_dir / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=1))
        os.replace(tmp, path)

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        try:
            while not stop.is_set():
                self.tick()
                until = time.monotonic() + interval_s
                while not stop.is_set() and time.monotonic() < until:
                    time.sleep(0.05)  # short sleeps: a signal handler runs between them
        finally:
            self.stop_all()


def read_state(rundir: RunDir) -> dict[str, Any] | None:
    """The watchdog's last written counters, or None."""
    try:
        return json.loads((rundir.run_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def playbook_wanted(
    manifest_path: str, python: str = sys.executable
) -> Callable[[], list[WantedWorker]]:
    """`wanted()` backed by the playbook's state: the workers `desired_workers` lists."""
    from kit.manifest import load_manifest

    try:
        from kit.playbook.workers import desired_workers  # the documented home
    except ImportError:
        from kit.playbook.pipelines import desired_workers
    from kit.playbook.state import StateStore

    manifest = load_manifest(manifest_path)
    state = StateStore(manifest.kit.state_url)

    def wanted() -> list[WantedWorker]:
        return [
            WantedWorker(spec.name, kit_argv(spec.argv, python))
            for spec in desired_workers(manifest, state)
        ]

    return wanted


def manifest_apps(manifest_path: str) -> Callable[[], list[ProcessSpec]]:
    """The app processes of `kit up`'s plan (built once: the manifest does not change under a
    running `kit up`)."""
    from kit.manifest import load_manifest
    from kit.runtime.plan import build_specs

    specs = [s for s in build_specs(load_manifest(manifest_path)) if s.kind == "app"]
    return lambda: specs


def kit_argv(argv: Sequence[str], python: str = sys.executable) -> tuple[str, ...]:
    """Run `kit ...` argv with this interpreter (`kit` may not be on PATH)."""
    if argv and argv[0] == "kit":
        return (python, "-m", "kit.cli", *argv[1:])
    return tuple(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    manifest = str(Path(args.manifest).resolve())
    watchdog = Watchdog(
        RunDir(Path(args.run_dir), Path(args.log_dir)),
        playbook_wanted(manifest),
        manifest_apps(manifest),
        cwd=os.getcwd(),
        env={"KIT_MANIFEST": manifest},
        echo=lambda line: print(time.strftime("%H:%M:%S ") + line, flush=True),
    )
    watchdog.echo(f"watchdog: watching {manifest}")
    watchdog.run(stop, args.interval)
    watchdog.echo("watchdog: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
