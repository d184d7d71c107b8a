"""Start, health-check and stop a set of processes idempotently (what `kit up`/`kit down` do).

Processes start in stages (apps, then the proxy, then the CDC watchdog) so that every
stage finds what it depends on ready. `up` skips a process whose recorded pid is still that
very process, so running it twice starts nothing twice; `down` stops in reverse stage order
and only ever signals pids it recorded (see `kit.runtime.procs`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from kit.runtime.procs import (
    PortInUse,
    ProcessRecord,
    ProcessSpec,
    RunDir,
    StopResult,
    is_running,
    start_detached,
    stop_records,
    tail,
)

Echo = Callable[[str], None]

# Start order; `down` uses the reverse. Kinds not listed start last and stop first.
STAGES: tuple[str, ...] = ("app", "proxy", "cdc", "watchdog")


class StartFailed(Exception):
    """A process exited or did not become ready; the message carries its log's tail."""


@dataclass(frozen=True)
class UpResult:
    name: str
    pid: int
    outcome: str  # "started", "already running", "external"
    ready_url: str | None
    seconds: float


def is_ready(target: str, status: int | None = None, timeout_s: float = 2.0) -> bool:
    """`tcp://host:port` accepts a connection, or the HTTP `target` answers `status`
    (None: any 2xx). The one readiness policy of `kit up`, `kit up --status` and the demo."""
    if target.startswith("tcp://"):
        parts = urlsplit(target)
        try:
            with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s):
                return True
        except OSError:
            return False
    try:
        response = httpx.get(target, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError:
        return False
    if status is None:
        return 200 <= response.status_code < 300
    return response.status_code == status


def _expected(url: str, status: int | None) -> str:
    if url.startswith("tcp://"):
        return f"accept a connection on {url}"
    return f"answer {url} with {status or '2xx'}"


def wait_ready(
    record: ProcessRecord, url: str | None, timeout_s: float, status: int | None = None
) -> None:
    """Poll until ready (`is_ready`); fail fast with the log tail if the process dies."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not is_running(record):
            raise StartFailed(
                f"{record.name} (pid {record.pid}) exited during start-up; "
                f"last lines of {record.log_path}:\n{tail(record.log_path)}"
            )
        if url is None or is_ready(url, status, timeout_s=1.0):
            return
        if time.monotonic() >= deadline:
            raise StartFailed(
                f"{record.name} (pid {record.pid}) did not {_expected(url, status)} within "
                f"{timeout_s:.0f}s; last lines of {record.log_path}:\n{tail(record.log_path)}"
            )
        time.sleep(0.1)


def wait_external(spec: ProcessSpec) -> None:
    """An app the team runs itself: wait for its readiness, never start it."""
    assert spec.ready_url is not None
    deadline = time.monotonic() + spec.ready_timeout_s
    while not is_ready(spec.ready_url, spec.ready_status, timeout_s=1.0):
        if time.monotonic() >= deadline:
            raise StartFailed(
                f"{spec.name} is external (the team runs it; the kit never starts it) and did "
                f"not {_expected(spec.ready_url, spec.ready_status)} within "
                f"{spec.ready_timeout_s:.0f}s: start it, or check its url and ready keys"
            )
        time.sleep(0.2)


def _stage(kind: str) -> int:
    return STAGES.index(kind) if kind in STAGES else len(STAGES)


class Supervisor:
    """Runs a list of `ProcessSpec`s with pid records in `rundir`."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        rundir: RunDir,
        *,
        echo: Echo = lambda _line: None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        names = [s.name for s in specs]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"duplicate process names: {sorted(duplicates)}")
        self.specs = list(specs)
        self.rundir = rundir
        self.echo = echo
        self.base_env = base_env

    def up(self) -> list[UpResult]:
        """Start every process not already running, stage by stage, each health-checked."""
        results: list[UpResult] = []
        for stage in sorted({_stage(s.kind) for s in self.specs}):
            batch = [s for s in self.specs if _stage(s.kind) == stage]
            started: list[tuple[ProcessSpec, ProcessRecord, float]] = []
            for spec in batch:
                if spec.external:
                    t0 = time.monotonic()
                    wait_external(spec)
                    self.echo(f"  {spec.name:<22} external      ready  {spec.ready_url}")
                    results.append(
                        UpResult(spec.name, 0, "external", spec.ready_url, time.monotonic() - t0)
                    )
                    continue
                current = self.rundir.running(spec.name)
                if current is not None:
                    if current.argv != spec.argv:
                        self.echo(
                            f"  {spec.name}: running (pid {current.pid}) with another command "
                            "line; `kit down` first to apply the new configuration"
                        )
                    results.append(
                        UpResult(spec.name, current.pid, "already running", spec.ready_url, 0.0)
                    )
                    continue
                try:
                    record = start_detached(spec, self.rundir, self.base_env)
                except PortInUse as exc:
                    raise StartFailed(str(exc)) from None
                except OSError as exc:  # no such interpreter / folder
                    raise StartFailed(
                        f"{spec.name}: cannot run {spec.argv[0]} in {spec.cwd or '.'}: {exc}"
                    ) from None
                started.append((spec, record, time.monotonic()))
            for spec, record, t0 in started:  # started together, waited on in turn
                wait_ready(record, spec.ready_url, spec.ready_timeout_s, spec.ready_status)
                seconds = time.monotonic() - t0
                self.echo(
                    f"  {spec.name:<22} pid {record.pid:<7} ready in {seconds:4.1f}s"
                    + (f"  {spec.ready_url}" if spec.ready_url else "")
                )
                results.append(UpResult(spec.name, record.pid, "started", spec.ready_url, seconds))
        return results

    def down(self, timeout_s: float = 10.0) -> list[StopResult]:
        """Stop every recorded process (also ones no longer in the specs), reverse stage order."""
        return stop_all(self.rundir, timeout_s, self.echo)

    def status(self) -> list[tuple[ProcessSpec, ProcessRecord | None, bool | None]]:
        """(spec, live record or None, ready?) for every spec; ready is None without a check
        (or when the process is not running); external apps are always checked."""
        rows: list[tuple[ProcessSpec, ProcessRecord | None, bool | None]] = []
        for spec in sorted(self.specs, key=lambda s: _stage(s.kind)):
            record = None if spec.external else self.rundir.running(spec.name)
            healthy = None
            if (record is not None or spec.external) and spec.ready_url:
                healthy = is_ready(spec.ready_url, spec.ready_status)
            rows.append((spec, record, healthy))
        return rows


def stop_all(
    rundir: RunDir, timeout_s: float = 10.0, echo: Echo = lambda _l: None
) -> list[StopResult]:
    """Stop every process recorded in `rundir`, latest stage first; records are removed."""
    results: list[StopResult] = []
    while True:
        records = rundir.records()
        if not records:
            return results
        last = max(_stage(r.kind) for r in records)
        batch = [r for r in records if _stage(r.kind) == last]
        for record, result in zip(batch, stop_records(batch, timeout_s), strict=True):
            rundir.forget(record.name)
            echo(f"  {record.name:<22} pid {record.pid:<7} {result.outcome}")
            results.append(result)
