"""CDC pipelines derived from the manifest, the workers that run them, and draining.

Per service two pipelines exist:

- forward (`monolith → service`): capture worker `capture:monolith` (one per source database,
  shared by every service) publishes `<prefix>.main.<table>`; sink worker `sink:<service>`
  applies them to the service database through the service's mapping.
- reverse (`service → monolith`, after write cut-over): capture worker `capture:<service>` on
  the service database publishes `<prefix>-<service>.main.<target table>`; sink worker
  `sink:<service>:reverse` applies them to the monolith through the inverted mapping
  ([tables.reverse] entries plus inverted plain copies).

Both sinks tag their transactions (cdc.sink origin tagging), so with capture on both sides no
change ever loops back.

Long-lived workers belong to `kit up`: the playbook records which workers it wants in the
state database (`desired_workers`), the supervisor runs `kit worker run NAME`. A worker holds
a lock while it runs; when nobody holds it (no `kit up`), `drain()` runs the worker in-process
until the pipeline is caught up, so steps work with or without `kit up`.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from cdc.events import topic_name
from cdc.mapping import ColumnMapping, MappingSpec, TableMapping
from cdc.ports import Transport
from kit.manifest import Manifest, ServiceSpec
from kit.playbook.state import StateStore

MONOLITH_CAPTURE = "capture:monolith"
CAPTURE_NAME = "capture"  # position name inside each source database's _cdc_offsets


class PipelineError(RuntimeError):
    """A pipeline cannot be set up or did not catch up in time; the message says why."""


def invert_mapping(spec: MappingSpec) -> MappingSpec:
    """The service → monolith mapping: [tables.reverse] entries plus inverted plain copies."""
    tables = []
    for tm in spec.tables:
        explicit = {c.target for c in tm.reverse}
        columns = list(tm.reverse) + [
            ColumnMapping(c.sources[0], (c.target,))
            for c in tm.columns
            if c.is_copy and c.sources[0] not in explicit
        ]
        tables.append(
            TableMapping(
                source=tm.target,
                target=tm.source,
                key=tm.source_key,
                columns=tuple(columns),
                strict=False,
            )
        )
    return MappingSpec(spec.service, tuple(tables))


def _schema_of(url: str) -> str:
    return "public" if make_url(url).get_backend_name().startswith("postgres") else "main"


@dataclass(frozen=True)
class Pipeline:
    """One direction of one service's data flow, fully derived from the manifest."""

    service: str
    direction: str  # forward | reverse
    source_url: str
    target_url: str
    mapping: MappingSpec
    topic_prefix: str
    group: str
    capture_worker: str
    sink_worker: str

    @property
    def source_tables(self) -> list[str]:
        return self.mapping.source_tables

    @property
    def target_tables(self) -> list[str]:
        return [t.target for t in self.mapping.tables]

    @property
    def topics(self) -> dict[str, str]:
        schema = _schema_of(self.source_url)
        return {t: topic_name(self.topic_prefix, schema, t) for t in self.source_tables}


def forward_pipeline(m: Manifest, service: str) -> Pipeline:
    s = m.service(service)
    return Pipeline(
        service=service,
        direction="forward",
        source_url=m.monolith.database_url,
        target_url=s.database_url,
        mapping=s.mapping(),
        topic_prefix=m.transport.topic_prefix,
        group=f"sink-{service}",
        capture_worker=MONOLITH_CAPTURE,
        sink_worker=f"sink:{service}",
    )


def reverse_pipeline(m: Manifest, service: str) -> Pipeline:
    s = m.service(service)
    return Pipeline(
        service=service,
        direction="reverse",
        source_url=s.database_url,
        target_url=m.monolith.database_url,
        mapping=invert_mapping(s.mapping()),
        topic_prefix=f"{m.transport.topic_prefix}-{service}",
        group=f"reverse-{service}",
        capture_worker=f"capture:{service}",
        sink_worker=f"sink:{service}:reverse",
    )


def make_transport(m: Manifest) -> Transport:
    """The event transport the manifest names (embedded log or Kafka)."""
    if m.transport.kind == "kafka":
        from cdc.transport.kafka import KafkaConfig, KafkaTransport

        return KafkaTransport(
            KafkaConfig(
                bootstrap_servers=m.transport.bootstrap_servers or "",
                partitions=m.transport.partitions,
            )
        )
    from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig

    return EmbeddedLog(EmbeddedLogConfig(m.transport.log_dir, partitions=m.transport.partitions))


def make_engine(url: str) -> Engine:
    from cdc.db import make_engine as cdc_engine

    return cdc_engine(url)


# ---------------------------------------------------------------------------------------------
# workers


@dataclass(frozen=True)
class WorkerSpec:
    """A long-lived worker the playbook wants running (started by `kit up`)."""

    name: str
    kind: str  # capture | sink
    argv: tuple[str, ...]


def worker_names(m: Manifest) -> list[str]:
    names = [MONOLITH_CAPTURE]
    for s in m.services:
        names += [f"sink:{s}", f"capture:{s}", f"sink:{s}:reverse"]
    return names


def desired_workers(m: Manifest, state: StateStore | None = None) -> list[WorkerSpec]:
    """Workers the playbook currently wants; `kit up` keeps exactly these running."""
    own = state is None
    state = state or StateStore(m.kit.state_url)
    try:
        wanted = [n for n, d in state.workers().items() if d]
    finally:
        if own:
            state.close()
    manifest = str((m.path or m.root / "kit.toml").resolve())
    out = []
    for name in wanted:
        if name not in worker_names(m):
            continue
        argv = ["kit", "--manifest", manifest, "worker", "run", name]
        out.append(WorkerSpec(name, name.split(":", 1)[0], tuple(argv)))
    return out


def _pipeline_of_worker(m: Manifest, name: str) -> tuple[str, Pipeline | None]:
    parts = name.split(":")
    if name == MONOLITH_CAPTURE:
        return "capture", None
    if parts[0] == "capture" and len(parts) == 2 and parts[1] in m.services:
        return "capture", reverse_pipeline(m, parts[1])
    if parts[0] == "sink" and len(parts) == 2 and parts[1] in m.services:
        return "sink", forward_pipeline(m, parts[1])
    if parts[0] == "sink" and len(parts) == 3 and parts[2] == "reverse" and parts[1] in m.services:
        return "sink", reverse_pipeline(m, parts[1])
    raise PipelineError(f"unknown worker {name!r}; known: {', '.join(worker_names(m))}")


def _capture_source(m: Manifest, name: str) -> tuple[str, str]:
    kind, pipe = _pipeline_of_worker(m, name)
    if pipe is None:
        return m.monolith.database_url, m.transport.topic_prefix
    return pipe.source_url, pipe.topic_prefix


@contextmanager
def file_lock(path: Path, blocking: bool = False) -> Iterator[bool]:
    """An flock on `path`; yields False (without waiting) when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _sink_lock(m: Manifest, name: str) -> Path:
    return m.kit.var_dir / "locks" / (name.replace(":", "-") + ".lock")


class _Runner:
    """One worker (capture or sink) that can do one unit of work at a time."""

    def __init__(self, m: Manifest, name: str, transport: Transport | None = None) -> None:
        self.m = m
        self.name = name
        self.kind, self.pipe = _pipeline_of_worker(m, name)
        self.transport = transport or make_transport(m)
        self._capture: Any = None
        self._sink: Any = None
        self._lock_cm: Any = None

    def try_acquire(self) -> bool:
        """Take the worker's lock; False when another process runs this worker."""
        if self.kind == "capture":
            from cdc.capture.sqlite import CaptureBusy, CaptureConfig, CaptureWorker

            url, prefix = _capture_source(self.m, self.name)
            worker = CaptureWorker(
                url, self.transport, CaptureConfig(topic_prefix=prefix, name=CAPTURE_NAME)
            )
            try:
                worker.acquire()
            except CaptureBusy:
                worker.close()
                return False
            self._capture = worker
            return True
        from cdc.sink import Sink, SinkConfig

        cm = file_lock(_sink_lock(self.m, self.name))
        if not cm.__enter__():
            cm.__exit__(None, None, None)
            return False
        self._lock_cm = cm
        assert self.pipe is not None
        try:
            self._sink = Sink(
                make_engine(self.pipe.target_url),
                self.pipe.mapping,
                self.transport,
                SinkConfig(self.pipe.group, tuple(self.pipe.topics.values())),
            )
            self._sink.start()
        except BaseException:
            self.release()
            raise
        return True

    def run_once(self) -> int:
        """One batch; returns how many events/changes it handled."""
        if self._capture is not None:
            return int(self._capture.run_once())
        self._sink.run_once()
        return int(self._sink.last_batch_size)

    def release(self) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        if self._lock_cm is not None:
            self._lock_cm.__exit__(None, None, None)
            self._lock_cm = None

    def held_elsewhere(self) -> bool:
        """True when another process currently runs this worker."""
        if self.kind == "capture":
            url, _ = _capture_source(self.m, self.name)
            path = make_url(url).database
            if not path:
                return False
            with file_lock(Path(f"{path}.cdc-{CAPTURE_NAME}.lock")) as got:
                return not got
        with file_lock(_sink_lock(self.m, self.name)) as got:
            return not got


def run_worker(
    m: Manifest,
    name: str,
    stop: threading.Event,
    *,
    on_batch: Callable[[int], None] | None = None,
    idle_sleep_s: float = 0.02,
) -> None:
    """Run one worker until `stop` is set (what `kit worker run NAME` does).

    Waits for the worker's lock when another process (or a step draining in-process) holds
    it, then loops; positions are durable, so a SIGTERM/kill at any moment is safe.
    """
    runner = _Runner(m, name)
    while not stop.is_set():
        if runner.try_acquire():
            break
        stop.wait(0.2)
    try:
        while not stop.is_set():
            n = runner.run_once()
            if n and on_batch is not None:
                on_batch(n)
            if not n:
                stop.wait(idle_sleep_s)
    finally:
        runner.release()


# ---------------------------------------------------------------------------------------------
# capture set-up (SQLite triggers; PostgreSQL publication)


def enable_capture(url: str, tables: list[str]) -> None:
    engine = make_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            from cdc.capture.sqlite import enable_capture as sqlite_enable

            sqlite_enable(engine, tables)
        else:
            from cdc.capture.postgres import enable_capture as pg_enable

            pg_enable(url, tables)
    finally:
        engine.dispose()


def disable_capture(url: str, tables: list[str]) -> None:
    engine = make_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            from cdc.capture.sqlite import disable_capture as sqlite_disable

            sqlite_disable(engine, tables)
        else:
            from cdc.capture.postgres import disable_capture as pg_disable

            pg_disable(url, tables)
    finally:
        engine.dispose()


def capture_enabled(url: str, tables: list[str]) -> dict[str, bool]:
    engine = make_engine(url)
    try:
        if engine.dialect.name != "sqlite":
            return {t: True for t in tables}
        from cdc.capture.sqlite import captured_tables

        with engine.connect() as conn:
            known = captured_tables(conn)
        return {t: t in known for t in tables}
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# lag and draining


@dataclass(frozen=True)
class Lag:
    """How far a pipeline is behind, per table (events not yet applied, and their age)."""

    table: str
    direction: str
    service: str
    events: int | None
    seconds: float | None
    dead_letters: int | None
    snapshot: str | None = None


def pipeline_lag(
    pipe: Pipeline, transport: Transport, source: Engine | None = None, target: Engine | None = None
) -> list[Lag]:
    from cdc.capture.sqlite import snapshot_states
    from cdc.status import pipeline_status

    own = []
    if source is None:
        source = make_engine(pipe.source_url)
        own.append(source)
    if target is None:
        target = make_engine(pipe.target_url)
        own.append(target)
    try:
        rows = pipeline_status(
            tables=pipe.source_tables,
            topics=pipe.topics,
            transport=transport,
            source=source,
            target=target,
            group=pipe.group,
            capture_name=CAPTURE_NAME,
        )
        snaps = (
            {s.table: s.status for s in snapshot_states(source)}
            if source.dialect.name == "sqlite"
            else {}
        )
    finally:
        for e in own:
            e.dispose()
    out = []
    for r in rows:
        events = (r.pending_capture or 0) + (r.lag_events or 0)
        seconds = max(r.capture_lag_s or 0.0, r.lag_s or 0.0) if r.lag_s is not None else None
        snap = snaps.get(r.table)
        if snap in ("pending", "running"):
            events += 1  # a snapshot still to publish counts as lag
        out.append(
            Lag(r.table, pipe.direction, pipe.service, events, seconds, r.dead_letters, snap)
        )
    return out


def drain(
    m: Manifest,
    pipe: Pipeline,
    *,
    timeout_s: float,
    progress: Callable[[str], None] | None = None,
    transport: Transport | None = None,
) -> dict[str, Any]:
    """Bring `pipe` to zero lag: run its workers in-process when no worker process holds them,
    else wait for the running workers. Raises PipelineError on timeout."""
    transport = transport or make_transport(m)
    runners = [_Runner(m, pipe.capture_worker, transport), _Runner(m, pipe.sink_worker, transport)]
    owned = [r.try_acquire() for r in runners]
    if progress:
        how = ", ".join(
            f"{r.name} {'in-process' if o else 'by its running worker'}"
            for r, o in zip(runners, owned, strict=True)
        )
        progress(f"draining {pipe.direction} CDC of {pipe.service}: {how}")
    source, target = make_engine(pipe.source_url), make_engine(pipe.target_url)
    handled = 0
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            busy = 0
            for r, own in zip(runners, owned, strict=True):
                if own:
                    n = r.run_once()
                    busy += n
                    handled += n
            if busy:
                continue
            lag = pipeline_lag(pipe, transport, source, target)
            if all((x.events or 0) == 0 for x in lag):
                return {
                    "handled_in_process": handled,
                    "tables": {x.table: {"lag_events": 0, "dead": x.dead_letters} for x in lag},
                }
            if time.monotonic() > deadline:
                left = ", ".join(f"{x.table}: {x.events} event(s)" for x in lag if x.events)
                raise PipelineError(
                    f"{pipe.direction} CDC of {pipe.service} did not catch up within "
                    f"{timeout_s:.0f}s ({left}); check `kit status` and the worker logs"
                )
            if not all(owned):
                owned = [o or r.try_acquire() for r, o in zip(runners, owned, strict=True)]
            time.sleep(0.05)
    finally:
        for r, own in zip(runners, owned, strict=True):
            if own:
                r.release()
        source.dispose()
        target.dispose()


def wait_worker_stopped(m: Manifest, name: str, timeout_s: float) -> bool:
    """Wait until no process runs worker `name` (after marking it unwanted)."""
    runner = _Runner(m, name)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not runner.held_elsewhere():
            return True
        time.sleep(0.2)
    return False


def service_of_table(m: Manifest, table: str) -> ServiceSpec | None:
    name = m.owner_of_table(table)
    return m.services[name] if name else None


def plain_engine(url: str) -> Engine:
    """An engine without the CDC pragmas (for short administrative reads)."""
    return create_engine(url)
