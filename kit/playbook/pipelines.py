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

On PostgreSQL the capture is logical decoding (cdc.capture.postgres): every pipeline has its
own publication and replication slot (`kit_<prefix>_<service>_fwd|rev`; slots are
server-wide), so the forward capture worker is per service (`capture:monolith:<service>`).
Sinks on PostgreSQL tag their commits with a replication origin and the captures run with
`origin = "none"`, so neither direction picks up the other's writes. Slots are dropped when a
pipeline stops for good (capture rollback, forward CDC after `writes`, reverse CDC on
rollback/retire): a forgotten slot holds WAL forever.

Long-lived workers belong to `kit up`: the playbook records which workers it wants in the
state database (`desired_workers`), the supervisor runs `kit worker run NAME`. A worker holds
a lock while it runs; when nobody holds it (no `kit up`), `drain()` runs the worker in-process
until the pipeline is caught up, so steps work with or without `kit up`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url

from cdc.events import topic_name
from cdc.mapping import ColumnMapping, MappingSpec, TableMapping
from cdc.ports import Transport
from kit.manifest import Manifest, TransportSpec
from kit.playbook.state import StateStore
from kitcore.db import is_postgres

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
    return "public" if is_postgres(url) else "main"


_PG_SUFFIX = {"forward": "fwd", "reverse": "rev", "replica": "rep"}


def pg_object_name(prefix: str, service: str, direction: str) -> str:
    """Slot/publication name of one pipeline: lower-case, `_`, at most 63 characters."""
    raw = f"kit_{prefix}_{service}_{_PG_SUFFIX[direction]}".lower()
    name = re.sub(r"[^a-z0-9_]", "_", raw)
    if len(name) > 63:
        name = name[:54] + "_" + hashlib.sha1(raw.encode()).hexdigest()[:8]
    return name


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
    slot: str = ""  # PostgreSQL source: replication slot (server-wide, unique per pipeline)
    publication: str = ""  # PostgreSQL source: publication of this pipeline's tables
    snapshot: str = "initial"  # PostgreSQL source: what a newly created slot starts with

    @property
    def pg_source(self) -> bool:
        return is_postgres(self.source_url)

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


def subset_mapping(spec: MappingSpec, sources: tuple[str, ...] | list[str]) -> MappingSpec:
    """The part of a mapping that maps these source tables (in the mapping's order)."""
    return MappingSpec(spec.service, tuple(t for t in spec.tables if t.source in sources))


def merge_mappings(*specs: MappingSpec) -> MappingSpec:
    """One mapping of several pipelines' tables (the verifier compares them in one pass)."""
    return MappingSpec(specs[0].service, tuple(t for s in specs for t in s.tables))


def forward_pipeline(m: Manifest, service: str) -> Pipeline:
    """Monolith → service for the tables the service takes over (its `tables`; its replicas
    have their own pipeline, `replica_pipeline`, which `writes` never stops)."""
    s = m.service(service)
    pg = is_postgres(m.monolith.database_url)
    name = pg_object_name(m.transport.topic_prefix, service, "forward")
    return Pipeline(
        service=service,
        direction="forward",
        source_url=m.monolith.database_url,
        target_url=s.database_url,
        mapping=subset_mapping(s.mapping(), s.tables),
        topic_prefix=m.transport.topic_prefix,
        group=f"sink-{service}",
        capture_worker=f"capture:monolith:{service}" if pg else MONOLITH_CAPTURE,
        sink_worker=f"sink:{service}",
        slot=name if pg else "",
        publication=name if pg else "",
    )


def reverse_pipeline(m: Manifest, service: str) -> Pipeline:
    s = m.service(service)
    return Pipeline(
        service=service,
        direction="reverse",
        source_url=s.database_url,
        target_url=m.monolith.database_url,
        mapping=invert_mapping(subset_mapping(s.mapping(), s.tables)),
        topic_prefix=f"{m.transport.topic_prefix}-{service}",
        group=f"reverse-{service}",
        capture_worker=f"capture:{service}",
        sink_worker=f"sink:{service}:reverse",
        slot=pg_object_name(m.transport.topic_prefix, service, "reverse"),
        publication=pg_object_name(m.transport.topic_prefix, service, "reverse"),
        # nothing to snapshot: the monolith already holds every row (forward CDC put the
        # service's data there); a snapshot would race with the monolith's last writes
        snapshot="never",
    )


def replica_pipeline(m: Manifest, service: str) -> Pipeline:
    """Monolith → service for the service's read-only replicas (`replicas = [...]`).

    Its own sink group and worker (`sink:<service>:replica`), so the `writes` step, which
    stops the forward pipeline, never stops it, and `retire` leaves it running. On SQLite the
    monolith's one trigger capture feeds it (topics shared with whichever service owns the
    table: each group reads them independently); on PostgreSQL it has its own slot and
    publication (`kit_<prefix>_<service>_rep`) and its own topics (`<prefix>-<service>-replica
    .public.<table>`), so two slots never publish one table into the same topic.

    It follows whichever side writes the table: the reverse sinks' writes into the monolith
    reach it too (SQLite: `replicated_tables` get triggers that record them tagged, applied by
    this pipeline's sink only; PostgreSQL: this slot's `origin = any`).
    """
    s = m.service(service)
    pg = is_postgres(m.monolith.database_url)
    name = pg_object_name(m.transport.topic_prefix, service, "replica")
    return Pipeline(
        service=service,
        direction="replica",
        source_url=m.monolith.database_url,
        target_url=s.database_url,
        mapping=subset_mapping(s.mapping(), s.replicas),
        topic_prefix=f"{m.transport.topic_prefix}-{service}-replica"
        if pg
        else m.transport.topic_prefix,
        group=f"replica-{service}",
        capture_worker=f"capture:monolith:{service}:replica" if pg else MONOLITH_CAPTURE,
        sink_worker=f"sink:{service}:replica",
        slot=name if pg else "",
        publication=name if pg else "",
    )


def make_transport(m: Manifest) -> Transport:
    """The event transport the manifest names (embedded log or Kafka)."""
    return transport_of(m.transport)


def transport_of(t: TransportSpec, environ: Mapping[str, str] | None = None) -> Transport:
    """THE transport factory (the playbook and `kit cdc` both build theirs here): the
    embedded log in `t.log_dir`, or Kafka on `t.bootstrap_servers` with the other KAFKA_*
    variables (security, SASL, TLS, batching) read from the environment."""
    if t.kind == "kafka":
        from cdc.transport.kafka import KafkaConfig, KafkaTransport

        env = dict(os.environ if environ is None else environ)
        overrides: dict[str, Any] = {
            "bootstrap_servers": t.bootstrap_servers or "",
            "session_timeout_ms": t.session_timeout_ms,
            "heartbeat_interval_ms": t.heartbeat_interval_ms,
        }
        if "KAFKA_PARTITIONS" not in env:
            overrides["partitions"] = t.partitions
        return KafkaTransport(KafkaConfig.from_env(env, **overrides))
    from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig

    return EmbeddedLog(EmbeddedLogConfig(t.log_dir, partitions=t.partitions))


def make_engine(url: str) -> Engine:
    from kitcore.db import make_engine as cdc_engine

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
    pg = is_postgres(m.monolith.database_url)
    names = [] if pg else [MONOLITH_CAPTURE]
    for s, spec in m.services.items():
        names += [f"capture:monolith:{s}"] if pg else []
        names += [f"sink:{s}", f"capture:{s}", f"sink:{s}:reverse"]
        if spec.replicas:
            names += [f"capture:monolith:{s}:replica"] if pg else []
            names += [f"sink:{s}:replica"]
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
    if parts[:2] == ["capture", "monolith"] and len(parts) == 3 and parts[2] in m.services:
        return "capture", forward_pipeline(m, parts[2])
    if name in worker_names(m) and parts[-1] == "replica":
        return parts[0], replica_pipeline(m, parts[-2])
    if parts[0] == "capture" and len(parts) == 2 and parts[1] in m.services:
        return "capture", reverse_pipeline(m, parts[1])
    if parts[0] == "sink" and len(parts) == 2 and parts[1] in m.services:
        return "sink", forward_pipeline(m, parts[1])
    if parts[0] == "sink" and len(parts) == 3 and parts[2] == "reverse" and parts[1] in m.services:
        return "sink", reverse_pipeline(m, parts[1])
    raise PipelineError(f"unknown worker {name!r}; known: {', '.join(worker_names(m))}")


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


def worker_lock(var_dir: Path, name: str) -> Path:
    """The file a running worker holds (in the manifest's var folder), shared by `kit up`,
    the playbook's drains and `kit cdc run <service>`."""
    return var_dir / "locks" / (name.replace(":", "-") + ".lock")


def _sink_lock(m: Manifest, name: str) -> Path:
    return worker_lock(m.kit.var_dir, name)


@dataclass(frozen=True)
class WorkerOptions:
    """What a command line may tune on a worker (the playbook uses the defaults)."""

    batch_size: int | None = None
    resnapshot: bool = False  # PostgreSQL: a lost slot is re-created and snapshotted again
    capture_tables: tuple[str, ...] = ()  # PostgreSQL: default the pipeline's source tables
    dead_letter_store: str | None = None  # default: the sink's own ("table")
    snapshot_chunk: int | None = None


def pg_capture_config(
    pipe: Pipeline, snapshot: str | None = None, options: WorkerOptions = WorkerOptions()
) -> Any:
    """The pgoutput capture of one pipeline (its own slot and publication; sink-tagged
    transactions skipped; frequent confirmations so drains and lag see progress quickly)."""
    from cdc.capture.postgres import PgCaptureConfig

    return PgCaptureConfig(
        tables=options.capture_tables or tuple(pipe.source_tables),
        slot=pipe.slot,
        publication=pipe.publication,
        topic_prefix=pipe.topic_prefix,
        snapshot=snapshot or pipe.snapshot,
        snapshot_chunk=options.snapshot_chunk or 2000,
        batch_size=options.batch_size or 500,
        status_interval_s=0.5,
        idle_wait_s=0.05,
        # a replica's own slot takes every change, the reverse sinks' writes included (the
        # table's owner may be a service whose changes reach the monolith only that way); its
        # topics are read by the replica's sink alone, whose target no capture reads back
        origin="any" if pipe.direction == "replica" else "none",
        resnapshot_if_slot_lost=options.resnapshot,
    )


def capture_worker(
    pipe: Pipeline, transport: Transport, options: WorkerOptions = WorkerOptions()
) -> Any:
    """THE capture worker of a pipeline's source: logical decoding (PostgreSQL) or the
    change-table reader (SQLite triggers)."""
    if pipe.pg_source:
        from cdc.capture.postgres import PgCaptureWorker

        return PgCaptureWorker(pipe.source_url, transport, pg_capture_config(pipe, options=options))
    from cdc.capture.sqlite import CaptureConfig, CaptureWorker

    extra: dict[str, Any] = {}
    if options.batch_size:
        extra["batch_size"] = options.batch_size
    if options.snapshot_chunk:
        extra["snapshot_chunk"] = options.snapshot_chunk
    config = CaptureConfig(topic_prefix=pipe.topic_prefix, name=CAPTURE_NAME, **extra)
    return CaptureWorker(pipe.source_url, transport, config)


def sink_worker(
    pipe: Pipeline, transport: Transport, options: WorkerOptions = WorkerOptions()
) -> Any:
    """THE sink of a pipeline: its mapping applied to its target database."""
    from cdc.sink import Sink, SinkConfig

    extra: dict[str, Any] = {}
    if options.batch_size:
        extra["batch_size"] = options.batch_size
    if options.dead_letter_store:
        extra["dead_letter_store"] = options.dead_letter_store
    # a replica follows whichever side writes its table: on SQLite the monolith's capture
    # publishes the reverse sinks' writes of replicated tables tagged with their origin
    # (`keep_applied`), which only a replica's sink applies
    extra["apply_sink_origins"] = pipe.direction == "replica"
    config = SinkConfig(pipe.group, tuple(pipe.topics.values()), **extra)
    return Sink(make_engine(pipe.target_url), pipe.mapping, transport, config)


class PipelineWorker:
    """One capture or sink worker of a pipeline, the ONE way both the playbook (`kit worker
    run`, in-process drains) and `kit cdc run` build and step them: `try_acquire`, then
    `run_once` (one batch; how many events/changes it handled), then `release`.

    `lock` (a file) keeps two processes from running the same sink or PostgreSQL capture; a
    SQLite capture holds its own lock next to its database.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        pipe: Pipeline,
        transport: Transport,
        *,
        lock: Path | None = None,
        options: WorkerOptions = WorkerOptions(),
        stop: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.pipe = pipe
        self.transport = transport
        self.lock = lock
        self.options = options
        self.stop = stop
        self.dead = 0  # events the last sink batch dead-lettered
        self.busy: str | None = None  # why the last try_acquire was refused
        self._capture: Any = None
        self._pg: Any = None
        self._pg_streaming = False
        self._sink: Any = None
        self._lock_cm: Any = None

    @property
    def pg_capture(self) -> bool:
        return self.kind == "capture" and self.pipe.pg_source

    @property
    def idle_wait_s(self) -> float:
        """How long to wait after an empty batch."""
        if self._capture is not None:
            return float(self._capture.config.poll_interval_s)
        return 0.02

    def _lock(self) -> bool:
        if self.lock is None:
            return True
        cm = file_lock(self.lock)
        if not cm.__enter__():
            cm.__exit__(None, None, None)
            return False
        self._lock_cm = cm
        return True

    def _acquire_pg_capture(self) -> bool:
        if not self._lock():
            return False
        try:
            worker = capture_worker(self.pipe, self.transport, self.options)
            self._pg = worker
            worker.prepare()  # finds or creates the slot, records snapshot work
        except BaseException:
            self.release()
            raise
        self._pg_streaming = False
        return True

    def try_acquire(self) -> bool:
        """Take the worker's lock; False when another process runs this worker."""
        if self.pg_capture:
            return self._acquire_pg_capture()
        if self.kind == "capture":
            from cdc.capture.sqlite import CaptureBusy

            worker = capture_worker(self.pipe, self.transport, self.options)
            try:
                worker.acquire()
            except CaptureBusy as exc:
                worker.close()
                self.busy = str(exc)
                return False
            self._capture = worker
            return True
        if not self._lock():
            self.busy = f"{self.name} is running in another process (its lock {self.lock})"
            return False
        from cdc.ports import ConsumerGroupBusy

        try:
            self._sink = sink_worker(self.pipe, self.transport, self.options)
            self._sink.start()
        except ConsumerGroupBusy as exc:
            # another member of the group reads its partitions (a `kit cdc run` sink started
            # without the manifest's lock): refused like a second capture, not a crash
            self.busy = str(exc)
            self.release()
            return False
        except BaseException:
            self.release()
            raise
        return True

    def wait_for_assignment(self, timeout_s: float) -> None:
        """Kafka sink: wait for the group join (empty polls before it are not "idle")."""
        wait = getattr(getattr(self._sink, "consumer", None), "wait_for_assignment", None)
        if wait is not None:
            wait(timeout_s)

    def run_once(self) -> int:
        """One batch; returns how many events/changes it handled."""
        if self._pg is not None:
            if not self._pg_streaming:
                before = self._pg.stats.snapshot_rows
                if not self._pg.run_snapshot(self.stop):  # pending chunks (none: slot existed)
                    return 0  # stopped mid-snapshot: resumes next time
                self._pg.start_stream()
                self._pg_streaming = True
                return self._pg.stats.snapshot_rows - before
            return int(self._pg.poll(0.05))
        if self._capture is not None:
            return int(self._capture.run_once())
        result = self._sink.run_once()
        self.dead = int(getattr(result, "dead", 0) or 0)
        return int(self._sink.last_batch_size)

    def release(self) -> None:
        if self._pg is not None:
            try:
                if self._pg_streaming:
                    self._pg.flush()  # publish and confirm what it holds before it stops
            finally:
                self._pg.close()
                self._pg = None
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
        if self.kind == "capture" and not self.pg_capture:
            path = make_url(self.pipe.source_url).database
            if not path:
                return False
            with file_lock(Path(f"{path}.cdc-{CAPTURE_NAME}.lock")) as got:
                return not got
        if self.lock is None:
            return False
        with file_lock(self.lock) as got:
            return not got


def _monolith_capture(m: Manifest) -> Pipeline:
    """The SQLite monolith's one capture, shared by every service (it only needs the source
    and the topic prefix of a pipeline)."""
    from cdc.mapping import MappingSpec

    return Pipeline(
        service="",
        direction="forward",
        source_url=m.monolith.database_url,
        target_url="",
        mapping=MappingSpec("", ()),
        topic_prefix=m.transport.topic_prefix,
        group="",
        capture_worker=MONOLITH_CAPTURE,
        sink_worker="",
    )


def manifest_worker(
    m: Manifest,
    name: str,
    transport: Transport | None = None,
    *,
    options: WorkerOptions = WorkerOptions(),
    stop: threading.Event | None = None,
) -> PipelineWorker:
    """Worker `name` of the manifest (`capture:monolith`, `sink:<service>`, ...)."""
    kind, pipe = _pipeline_of_worker(m, name)
    return PipelineWorker(
        name,
        kind,
        pipe or _monolith_capture(m),
        transport or make_transport(m),
        lock=_sink_lock(m, name),
        options=options,
        stop=stop,
    )


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
    runner = manifest_worker(m, name)
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
# capture set-up (SQLite triggers; PostgreSQL publication + slot per pipeline)


def enable_capture(
    url: str,
    tables: list[str],
    publication: str = "strangler_cdc",
    keys: Mapping[str, tuple[str, ...]] | None = None,
    keep_applied: Sequence[str] = (),
) -> None:
    """`keys`: the key a table without a primary key is captured by (its mapping's declared
    key, `cdc.keys.declared_keys`); `keep_applied` (SQLite): tables whose sink-applied
    changes are captured too, tagged with their origin (`replicated_tables`)."""
    _switch_capture(url, tables, publication, on=True, keys=keys, keep_applied=keep_applied)


def disable_capture(url: str, tables: list[str], publication: str = "strangler_cdc") -> None:
    _switch_capture(url, tables, publication, on=False)


def _switch_capture(
    url: str,
    tables: list[str],
    publication: str,
    *,
    on: bool,
    keys: Mapping[str, tuple[str, ...]] | None = None,
    keep_applied: Sequence[str] = (),
) -> None:
    """Turn capture on or off with the backend's own mechanism (triggers or publication);
    a table without a primary key is captured by its declared key in `keys`."""
    engine = make_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            from cdc.capture import sqlite

            if on:
                sqlite.enable_capture(engine, tables, keys, keep_applied)
            else:
                sqlite.disable_capture(engine, tables)
        else:
            from cdc.capture import postgres

            if on:
                postgres.enable_capture(url, tables, publication=publication, keys=keys)
            else:
                postgres.disable_capture(url, tables, publication=publication)
    finally:
        engine.dispose()


def capture_enabled(
    url: str, tables: list[str], publication: str = "strangler_cdc"
) -> dict[str, bool]:
    """Per table: is it captured (SQLite: has triggers; PostgreSQL: is in the publication)."""
    engine = make_engine(url)
    try:
        if engine.dialect.name != "sqlite":
            from cdc.capture.postgres import _connect, _published

            conn = _connect(url)
            try:
                with conn.cursor() as cur:
                    have = {str(r) for r in _published(cur, publication)}
            finally:
                conn.close()
            return {t: (t if "." in t else f"public.{t}") in have for t in tables}
        from cdc.capture.sqlite import captured_tables

        with engine.connect() as conn:
            known = captured_tables(conn)
        return {t: t in known for t in tables}
    finally:
        engine.dispose()


def enable_pipe_capture(m: Manifest, pipe: Pipeline, snapshot: str | None = None) -> None:
    """Start capturing the pipeline's source tables.

    PostgreSQL: adds them to the pipeline's publication and, when the pipeline starts without
    a snapshot (or `snapshot` is given), creates its slot right now, so every change committed
    from here on is kept for the worker, however late it starts. A forward pipeline's slot is
    created by its worker, which exports the snapshot it reads the tables with.
    """
    from cdc.keys import declared_keys

    enable_capture(
        pipe.source_url,
        pipe.source_tables,
        pipe.publication or "strangler_cdc",
        keys=declared_keys(pipe.mapping),
        keep_applied=replicated_tables(m, pipe),
    )
    if pipe.pg_source and (snapshot is not None or pipe.snapshot == "never"):
        ensure_slot(m, pipe, snapshot or pipe.snapshot)


def replicated_tables(m: Manifest, pipe: Pipeline) -> list[str]:
    """The monolith tables of `pipe` some service keeps a replica of: on SQLite their triggers
    also record the reverse sinks' writes (tagged), so the replica follows the table after its
    writes moved to a service (`writes`), and after that service's `retire`."""
    if pipe.source_url != m.monolith.database_url:
        return []
    return [t for t in pipe.source_tables if m.replica_holders(t)]


def ensure_slot(m: Manifest, pipe: Pipeline, snapshot: str) -> None:
    """Create the pipeline's slot (and its snapshot bookkeeping) unless it exists."""
    from cdc.capture.postgres import PgCaptureWorker

    if not pipe.pg_source:
        return
    with file_lock(_sink_lock(m, pipe.capture_worker)) as got:
        if not got:
            return  # its worker runs: it has prepared the slot already
        worker = PgCaptureWorker(
            pipe.source_url, make_transport(m), pg_capture_config(pipe, snapshot)
        )  # the slot's snapshot mode differs from the pipeline's default
        try:
            worker.prepare()
        finally:
            worker.close()


def tables_still_captured(m: Manifest, pipe: Pipeline) -> set[str]:
    """Source tables of `pipe` another pipeline on the same SQLite source still needs (the
    monolith's triggers are shared: a service's replica of a table another service takes over
    reads the same triggers). PostgreSQL pipelines each have their own publication: none."""
    if pipe.pg_source or pipe.source_url != m.monolith.database_url:
        return set()
    state = StateStore(m.kit.state_url)
    try:
        wanted = {n for n, on in state.workers().items() if on}
    finally:
        state.close()
    out: set[str] = set()
    for name in m.services:
        for other in (forward_pipeline(m, name), replica_pipeline(m, name)):
            if other.sink_worker == pipe.sink_worker or other.sink_worker not in wanted:
                continue
            out |= set(other.source_tables) & set(pipe.source_tables)
    return out


def disable_pipe_capture(m: Manifest, pipe: Pipeline, *, drop: bool = True) -> None:
    """Stop capturing; on PostgreSQL also drop the pipeline's slot (its worker must be
    stopped first) so it does not hold WAL forever. On SQLite, triggers another wanted
    pipeline still reads (a replica of the same table) stay."""
    keep = tables_still_captured(m, pipe)
    tables = [t for t in pipe.source_tables if t not in keep]
    disable_capture(pipe.source_url, tables, pipe.publication or "strangler_cdc")
    if pipe.pg_source and drop:
        drop_pipe_slot(m, pipe)


def drop_pipe_slot(m: Manifest, pipe: Pipeline) -> bool:
    """Drop the pipeline's slot and snapshot state; False when there was none."""
    from cdc.capture.postgres import CaptureError, drop_slot

    if not pipe.pg_source:
        return False
    lock = _sink_lock(m, pipe.capture_worker)
    deadline = time.monotonic() + 15.0
    while True:  # wait (bounded) for its worker to let go; force-drop after that
        with file_lock(lock) as got:
            if got or time.monotonic() > deadline:
                try:
                    drop_slot(pipe.source_url, pipe.slot, force=True)
                except CaptureError as exc:
                    if "does not exist" in str(exc):
                        return False
                    raise
                return True
        time.sleep(0.1)


def pipe_capture_enabled(pipe: Pipeline) -> dict[str, bool]:
    return capture_enabled(pipe.source_url, pipe.source_tables, pipe.publication or "strangler_cdc")


def snapshot_summary(pipe: Pipeline) -> dict[str, tuple[str, int]]:
    """Per source table: (snapshot status, rows published by it)."""
    if pipe.pg_source:
        from cdc.capture.postgres import snapshot_progress

        return {
            p.table.split(".", 1)[-1]: (p.status, int(p.rows_done or 0))
            for p in snapshot_progress(pipe.source_url, pipe.slot)
        }
    from cdc.capture.sqlite import snapshot_states

    engine = make_engine(pipe.source_url)
    try:
        return {
            s.table: (s.status, int(s.rows_done or 0))
            for s in snapshot_states(engine)
            if s.table in pipe.source_tables
        }
    finally:
        engine.dispose()


def _high_water(conn: Any, dialect: str, table: str, column: str) -> int:
    """The highest id `table.column` has handed out: max(column) and, where the database keeps
    one, its sequence (ids of deleted rows are not handed out again)."""
    from sqlalchemy import text

    q = '"' + table.replace('"', '""') + '"'
    c = '"' + column.replace('"', '""') + '"'
    high = int(conn.execute(text(f"SELECT coalesce(max({c}), 0) FROM {q}")).scalar() or 0)
    if dialect == "postgresql":
        seq = conn.execute(
            text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": q, "c": column}
        ).scalar()
        if seq:
            last = conn.execute(text(f"SELECT last_value FROM {seq}")).scalar()
            high = max(high, int(last or 0))
    elif dialect == "sqlite":
        has = conn.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'")
        ).first()
        if has:
            seq = conn.execute(
                text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table}
            ).scalar()
            high = max(high, int(seq or 0))
    return high


def sync_sequences(pipe: Pipeline, headroom: int = 1000) -> dict[str, int]:
    """Before write ownership moves to the pipeline's target: move each target table's id
    sequence (PostgreSQL serial/identity) past every id the source has handed out, plus
    `headroom` for creates still in flight on the source side (they arrive through CDC with
    their own ids and must not collide with ids the new owner hands out).

    CDC inserts rows with explicit ids, which never advances a PostgreSQL sequence; SQLite
    targets need nothing: their next id is max(id) + 1, and the write routes are held until
    the final drain applied every id the source handed out (steps/writes.py). Returns
    {target table: next id}.
    """
    from sqlalchemy import text

    target = make_engine(pipe.target_url)
    if target.dialect.name != "postgresql":
        target.dispose()
        return {}
    source = make_engine(pipe.source_url)
    out: dict[str, int] = {}
    try:
        with source.connect() as sconn, target.begin() as tconn:
            for tm in pipe.mapping.tables:
                if len(tm.key) != 1:
                    continue
                tq = '"' + tm.target.replace('"', '""') + '"'
                seq = tconn.execute(
                    text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": tq, "c": tm.key[0]}
                ).scalar()
                if not seq:
                    continue
                src = _high_water(sconn, source.dialect.name, tm.source, tm.source_key[0])
                tgt = _high_water(tconn, "postgresql", tm.target, tm.key[0])
                value = max(src + headroom, tgt)
                tconn.execute(text("SELECT setval(:s, :v)"), {"s": seq, "v": value})
                out[tm.target] = value + 1
    finally:
        source.dispose()
        target.dispose()
    return out


def remove_deleted_rows(pipe: Pipeline) -> dict[str, dict[str, Any]]:
    """Delete from the pipeline's target the rows its source no longer has (the deletes made
    while its capture was off, which a restarted capture's snapshot cannot carry). Per
    target table: rows deleted, and the rows the target refused to delete with the reason."""
    from cdc.verify import remove_extra_rows

    source, target = make_engine(pipe.source_url), make_engine(pipe.target_url)
    try:
        out = {}
        for table in pipe.source_tables:
            removed = remove_extra_rows(source, target, pipe.mapping.for_source(table))
            out[removed.table] = {"deleted": removed.deleted, "refused": removed.refused}
        return out
    finally:
        source.dispose()
        target.dispose()


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
    slot_lag_bytes: int | None = None  # PostgreSQL source: WAL the slot holds back
    group_lag: int | None = None  # Kafka: published − offsets committed by the sink group
    sink_events: int | None = None  # published but not applied yet
    captured_seq: int | None = None  # SQLite source: the capture's position in its change log
    published: int | None = None  # events in the topic (all partitions)
    applied: int | None = None  # events of the topic the sink has applied


@dataclass(frozen=True)
class PgSlotState:
    """A PostgreSQL pipeline's capture side: its slot, and what it has not published yet."""

    exists: bool
    active: bool
    confirmed_lsn: int | None
    current_lsn: int
    lag_bytes: int | None
    pending_changes: int | None  # inactive slot: captured-table changes not yet published
    oldest_s: float | None  # ... and the age of the oldest of them
    flush_lag_s: float | None  # active slot: the walsender's flush lag


def pg_slot_state(pipe: Pipeline, peek: bool = True, peek_limit: int = 20000) -> PgSlotState:
    """Read the slot; an inactive one is peeked (not consumed) to count unpublished changes
    of the captured tables (transactions carrying a sink's origin do not count)."""
    from cdc.capture.pgoutput import Begin, Origin, decode_message, parse_lsn
    from cdc.capture.postgres import _connect

    conn = _connect(pipe.source_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn()::text")
            current = parse_lsn(cur.fetchone()[0])
            cur.execute(
                "SELECT active, active_pid, confirmed_flush_lsn::text FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (pipe.slot,),
            )
            row = cur.fetchone()
            if row is None:
                return PgSlotState(False, False, None, current, None, None, None, None)
            active, pid, confirmed_text = row
            confirmed = parse_lsn(confirmed_text) if confirmed_text else None
            lag = max(0, current - confirmed) if confirmed is not None else None
            if active:
                cur.execute(
                    "SELECT extract(epoch FROM flush_lag) FROM pg_stat_replication WHERE pid = %s",
                    (pid,),
                )
                got = cur.fetchone()
                flush = float(got[0]) if got and got[0] is not None else 0.0
                return PgSlotState(True, True, confirmed, current, lag, None, None, flush)
            if not peek:
                return PgSlotState(True, False, confirmed, current, lag, None, None, None)
            pending, oldest = 0, None
            try:
                cur.execute(
                    "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s, "
                    "'proto_version', '1', 'publication_names', %s)",
                    (pipe.slot, peek_limit, pipe.publication),
                )
                tx_ts, skip = None, False
                for (data,) in cur.fetchall():
                    kind = bytes(data[:1])
                    if kind == b"B":
                        msg = decode_message(bytes(data))
                        assert isinstance(msg, Begin)
                        tx_ts, skip = msg.commit_ts.timestamp(), False
                    elif kind == b"O":
                        skip = isinstance(decode_message(bytes(data)), Origin)
                    elif kind in (b"I", b"U", b"D", b"T") and not skip:
                        pending += 1
                        if tx_ts is not None and (oldest is None or tx_ts < oldest):
                            oldest = tx_ts
            except Exception:  # noqa: BLE001 - taken by a worker meanwhile: unknown
                return PgSlotState(True, True, confirmed, current, lag, None, None, None)
            age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
            return PgSlotState(True, False, confirmed, current, lag, pending, age, None)
    finally:
        conn.close()


def pipeline_lag(
    pipe: Pipeline, transport: Transport, source: Engine | None = None, target: Engine | None = None
) -> list[Lag]:
    """Per table: events captured or published but not applied yet, and their age.

    SQLite source: unpublished change-table rows + the sink's lag. PostgreSQL source: the
    sink's lag + the slot's unpublished changes (peeked while no worker streams; while one
    streams, its walsender's flush lag); a slot not created yet or a snapshot not finished
    counts as one pending event (of unknown age).
    """
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
            source=None if pipe.pg_source else source,
            target=target,
            group=pipe.group,
            capture_name=CAPTURE_NAME,
        )
        snaps = {t: st for t, (st, _n) in snapshot_summary(pipe).items()}
        slot = pg_slot_state(pipe) if pipe.pg_source else None
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
        slot_bytes = None
        if slot is not None:
            slot_bytes = slot.lag_bytes
            if not slot.exists:
                if pipe.snapshot == "initial":
                    events += 1  # capture not started yet: its snapshot is still to come
                    seconds = None
            elif slot.pending_changes:
                events += slot.pending_changes
                seconds = max(seconds or 0.0, slot.oldest_s or 0.0)
            elif slot.active and (slot.flush_lag_s or 0.0) > 0.5 and (slot.lag_bytes or 0) > 0:
                events += 1
                seconds = max(seconds or 0.0, slot.flush_lag_s or 0.0)
        out.append(
            Lag(
                r.table,
                pipe.direction,
                pipe.service,
                events,
                seconds,
                r.dead_letters,
                snap,
                slot_bytes,
                getattr(r, "group_lag", None),
                r.lag_events,
                r.captured_seq,
                r.published,
                r.applied,
            )
        )
    return out


def _wal_fence(pipe: Pipeline) -> int | None:
    """PostgreSQL: the WAL position every change committed so far is at or before."""
    if not pipe.pg_source:
        return None
    return pg_slot_state(pipe, peek=False).current_lsn


def _change_log_fence(pipe: Pipeline, source: Engine) -> int | None:
    """SQLite source: the last change-log position of the pipeline's tables when the drain
    starts (None: no change log, the zero-lag rule applies)."""
    from cdc.capture.sqlite import CHANGES

    if pipe.pg_source or source.dialect.name != "sqlite" or not inspect(source).has_table(CHANGES):
        return None
    marks = ", ".join("?" for _ in pipe.source_tables)
    with source.connect() as conn:
        row = conn.exec_driver_sql(
            f"SELECT max(seq) FROM {CHANGES} WHERE tbl IN ({marks})", tuple(pipe.source_tables)
        ).one()
    return int(row[0] or 0)


QUIET_S = 0.5  # a final drain waits this long first: requests in flight at the flip land


class _Fence:
    """Caught up with what was committed when the drain started, not with a moving target:
    under steady writes the lag is rarely zero at the instant it is read, but every change
    before the fence is applied once the capture passed the fence and the sink applied what
    was published by then (the PostgreSQL drain does the same with a WAL position)."""

    def __init__(self, seq: int | None) -> None:
        self.seq = seq
        self.published: dict[str, int] | None = None

    def reached(self, lag: Sequence[Lag]) -> bool:
        if self.seq is None or any(x.captured_seq is None for x in lag):
            return False
        if any(x.snapshot in ("pending", "running") for x in lag):
            return False
        if self.published is None:
            if any((x.captured_seq or 0) < self.seq for x in lag):
                return False
            self.published = {x.table: x.published or 0 for x in lag}
        return all((x.applied or 0) >= self.published.get(x.table, 0) for x in lag)


def _pg_caught_up(pipe: Pipeline, fence: int | None) -> bool:
    """The slot confirmed (published) everything up to `fence`: captures confirm after the
    transport acknowledged, and on keepalives once everything they received is confirmed."""
    if fence is None:
        return True
    st = pg_slot_state(pipe, peek=False)
    if not st.exists:
        return False  # its worker has not created it yet
    return st.confirmed_lsn is not None and st.confirmed_lsn >= fence


def drain(
    m: Manifest,
    pipe: Pipeline,
    *,
    timeout_s: float,
    progress: Callable[[str], None] | None = None,
    transport: Transport | None = None,
    final: bool = False,
) -> dict[str, Any]:
    """Bring `pipe` up to date with every change committed before the drain started (zero
    lag, or past the start's fence under steady writes): run its workers in-process when no
    worker process holds them, else wait for the running workers. Raises PipelineError on
    timeout.

    `final`: the source stopped taking writes for these tables (their routes moved away) and
    its capture stops next, so nothing may be left behind, not even a write whose request was
    in flight when the routes moved: it waits `QUIET_S` before it reads the WAL position, and
    on SQLite it needs zero lag (no change-log fence: no new writes come).

    On PostgreSQL "captured" means: the slot confirmed the WAL position current when the
    drain started (a fence), and every snapshot is done.
    """
    transport = transport or make_transport(m)
    runners = [
        manifest_worker(m, pipe.capture_worker, transport),
        manifest_worker(m, pipe.sink_worker, transport),
    ]
    owned = [r.try_acquire() for r in runners]
    if progress:
        how = ", ".join(
            f"{r.name} {'in-process' if o else 'by its running worker'}"
            for r, o in zip(runners, owned, strict=True)
        )
        progress(f"draining {pipe.direction} CDC of {pipe.service}: {how}")
    source, target = make_engine(pipe.source_url), make_engine(pipe.target_url)
    if final:
        time.sleep(QUIET_S)  # requests in flight when the routes moved commit first
    fence = _wal_fence(pipe)
    log_fence = _Fence(None if final else _change_log_fence(pipe, source))
    handled = 0
    deadline = time.monotonic() + timeout_s
    checked = 0.0
    try:
        while True:
            busy = 0
            for r, own in zip(runners, owned, strict=True):
                if own:
                    n = r.run_once()
                    busy += n
                    handled += n
            if busy and time.monotonic() - checked < 0.5:
                continue  # in-process workers with work to do: look again soon, not never
            checked = time.monotonic()
            lag = pipeline_lag(pipe, transport, source, target)
            if pipe.pg_source:
                done = _pg_caught_up(pipe, fence) and all(
                    x.snapshot not in ("pending", "running") for x in lag
                )
                # the slot's own pending count is not needed once the fence is confirmed:
                # what remains is the sink's lag (published - applied)
                done = done and all((x.sink_events or 0) == 0 for x in lag)
            else:
                done = all((x.events or 0) == 0 for x in lag) or log_fence.reached(lag)
            if done:
                return {
                    "handled_in_process": handled,
                    # past the fence, newer events may still be on their way: say how many
                    "tables": {
                        x.table: {"lag_events": x.events or 0, "dead": x.dead_letters} for x in lag
                    },
                }
            if time.monotonic() > deadline:
                left = ", ".join(f"{x.table}: {x.events} event(s)" for x in lag if x.events)
                raise PipelineError(
                    f"{pipe.direction} CDC of {pipe.service} did not catch up within "
                    f"{timeout_s:.0f}s ({left or 'capture not confirmed yet'}); check "
                    "`kit status` and the worker logs"
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
    return _wait_worker(m, name, timeout_s, running=False)


def wait_worker_running(m: Manifest, name: str, timeout_s: float) -> bool:
    """Wait until a process (the `kit up` watchdog's) runs worker `name` (after wanting it)."""
    return _wait_worker(m, name, timeout_s, running=True)


def _wait_worker(m: Manifest, name: str, timeout_s: float, *, running: bool) -> bool:
    runner = manifest_worker(m, name)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if runner.held_elsewhere() == running:
            return True
        time.sleep(0.2)
    return False
