"""`kit cdc ...`: set up, run, observe and verify change data capture.

Every verb takes a service of the manifest (`kit cdc verify catalog`, `kit cdc run catalog`,
or `kit cdc --service catalog VERB`): the monolith and service database URLs, the mapping,
the transport (embedded log folder or Kafka), the topic prefix, the sink group and the
PostgreSQL slot/publication then come from the manifest, exactly as the playbook derives
them. Options (or their CDC_* variables) override single values. Without a service, the
values come from the options alone: --source-url (CDC_SOURCE_URL), --target-url
(CDC_TARGET_URL), --mapping (CDC_MAPPING), --log-dir (CDC_LOG_DIR), --topic-prefix
(CDC_TOPIC_PREFIX), --group (CDC_GROUP, default ``sink-<service>``); `status` and `verify`
without a service and without --mapping cover every service of the manifest.
Workers and transports are built by the playbook's own factory (kit.playbook.pipelines).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from sqlalchemy.exc import SQLAlchemyError

from cdc.capture import postgres as pgcap
from cdc.capture.sqlite import (
    CaptureError,
    disable_capture,
    enable_capture,
    request_snapshot,
    snapshot_states,
)
from cdc.dlq import list_any_dead_letters
from cdc.events import topic_name
from cdc.keys import declared_keys
from cdc.mapping import MappingError, MappingSpec, load_mapping
from cdc.ports import Transport
from cdc.sink import (
    DLQ_SUFFIX,
    Sink,
    SinkConfig,
    SinkError,
    drop_dead_letters,
    retry_dead_letters,
)
from cdc.status import pipeline_status
from cdc.verify import VerifyError, format_key, verify
from kit.manifest import ManifestError, TransportSpec, load_manifest
from kit.playbook.pipelines import (
    MONOLITH_CAPTURE,
    Pipeline,
    PipelineWorker,
    WorkerOptions,
    capture_worker,
    forward_pipeline,
    transport_of,
    worker_lock,
)
from kitcore.db import is_postgres, make_engine

SOURCE_SCHEMA = "main"  # SQLite source; a PostgreSQL source uses the table's schema
PG_SCHEMA = "public"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Plain aligned columns, readable in a terminal and in logs."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    click.echo("  ".join("-" * w for w in widths))
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


#: group options a named service fills in from the manifest (unless given explicitly)
_FROM_MANIFEST = (
    "source_url",
    "target_url",
    "mapping_path",
    "log_dir",
    "topic_prefix",
    "group",
    "partitions",
    "kafka",
    "slot",
    "publication",
)


@dataclass
class Ctx:
    source_url: str | None
    target_url: str | None
    mapping_path: str | None
    log_dir: str
    topic_prefix: str
    group: str | None
    partitions: int
    kafka: str | None = None
    slot: str = "strangler_cdc"
    publication: str = "strangler_cdc"
    dlq_store: str | None = None
    explicit: frozenset[str] = frozenset()  # options the user gave (flag or CDC_* variable)
    service: str | None = None
    manifest_transport: TransportSpec | None = None
    var_dir: Path | None = None  # the manifest's: worker locks shared with `kit up`
    wanted: str | None = None  # --service / CDC_SERVICE
    # a manifest service: the tables its forward pipeline carries (its replicas have their
    # own pipeline, `kit worker run sink:<svc>:replica`; `verify` compares both)
    owned: tuple[str, ...] | None = None
    _transport: Transport | None = None

    def for_service(self, service: str | None) -> Ctx:
        """This context with `service`'s values from the manifest (the forward pipeline, as
        the playbook derives it); explicit options still win. A service the manifest does
        not have is accepted only as the name of the --mapping's service (no manifest)."""
        service = service or self.wanted
        if service is None or service == self.service:
            return self
        try:
            m = load_manifest()
            pipe = forward_pipeline(m, service)
        except (ManifestError, MappingError) as exc:
            if self.mapping_path and "mapping_path" in self.explicit:
                if self.mapping().service != service:
                    raise click.UsageError(
                        f"mapping {self.mapping_path} is for service "
                        f"{self.mapping().service!r}, not {service!r}"
                    ) from None
                return self
            raise click.ClickException(str(exc)) from None
        t = m.transport
        values: dict[str, Any] = {
            "source_url": pipe.source_url,
            "target_url": pipe.target_url,
            "mapping_path": str(m.service(service).mapping_path),
            "log_dir": str(t.log_dir),
            "topic_prefix": t.topic_prefix,
            "group": pipe.group,
            "partitions": t.partitions,
            "kafka": t.bootstrap_servers if t.kind == "kafka" else None,
            "slot": pipe.slot or self.slot,
            "publication": pipe.publication or self.publication,
        }
        keep = {k: v for k, v in values.items() if k not in self.explicit}
        if "mapping_path" not in self.explicit:
            keep["owned"] = tuple(m.service(service).tables)
        return replace(
            self,
            service=service,
            manifest_transport=t,
            var_dir=m.kit.var_dir,
            _transport=None,
            **keep,
        )

    def services(self) -> list[str]:
        """Every service of the manifest (for `status` / `verify` without a service)."""
        try:
            return sorted(load_manifest().services)
        except ManifestError as exc:
            raise click.UsageError(
                "no mapping: name a service of the manifest, or pass --mapping PATH (or set "
                f"CDC_MAPPING) with the database options ({exc.problems[0]})"
            ) from None

    @property
    def postgres(self) -> bool:
        return is_postgres(self.source_url)

    @property
    def dead_letter_store(self) -> str:
        """Dead letters: on `<topic>.dlq` with Kafka, in the target database otherwise."""
        return self.dlq_store or ("topic" if self.kafka else "table")

    def mapping(self, *, with_replicas: bool = False) -> MappingSpec:
        """The forward pipeline's mapping (a manifest service: the tables it owns), or with
        its replicas too (what `verify` compares)."""
        if not self.mapping_path:
            raise click.UsageError(
                "no mapping: name a service of the manifest, or pass --mapping PATH or set "
                "CDC_MAPPING"
            )
        try:
            spec = load_mapping(self.mapping_path)
        except MappingError as exc:
            raise click.ClickException(str(exc)) from None
        if self.owned is None or with_replicas:
            return spec
        return MappingSpec(spec.service, tuple(t for t in spec.tables if t.source in self.owned))

    def source(self):  # noqa: ANN201 - sqlalchemy Engine
        if not self.source_url:
            raise click.UsageError("no source database: pass --source-url or set CDC_SOURCE_URL")
        return make_engine(self.source_url)

    def target(self):  # noqa: ANN201
        if not self.target_url:
            raise click.UsageError("no target database: pass --target-url or set CDC_TARGET_URL")
        return make_engine(self.target_url)

    def transport_spec(self) -> TransportSpec:
        """The manifest's transport (when a service is named) with the options applied."""
        base = self.manifest_transport or TransportSpec("embedded", "cdc", Path("."))
        return replace(
            base,
            kind="kafka" if self.kafka else "embedded",
            topic_prefix=self.topic_prefix,
            log_dir=Path(self.log_dir),
            partitions=self.partitions,
            bootstrap_servers=self.kafka,
        )

    def transport(self) -> Transport:
        """Kafka when --kafka / $KAFKA_BOOTSTRAP_SERVERS (or the manifest) says so, else the
        embedded log: built by the playbook's one transport factory."""
        try:
            return transport_of(self.transport_spec())
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--kafka / KAFKA_*") from None

    def shared_transport(self) -> Transport:
        """One transport per command (read-only uses: status, dlq list)."""
        if self._transport is None:
            self._transport = self.transport()
        return self._transport

    def pipeline(self, mapping: MappingSpec | None = None) -> Pipeline:
        """The forward pipeline these options describe (what the workers are built from)."""
        mapping = mapping or (self.mapping() if self.mapping_path else MappingSpec("", ()))
        return Pipeline(
            service=mapping.service,
            direction="forward",
            source_url=self.source_url or "",
            target_url=self.target_url or "",
            mapping=mapping,
            topic_prefix=self.topic_prefix,
            group=self.group_for(mapping),
            capture_worker=f"capture:monolith:{mapping.service}"
            if self.postgres
            else MONOLITH_CAPTURE,
            sink_worker=f"sink:{mapping.service}",
            slot=self.slot,
            publication=self.publication,
        )

    def worker(
        self, kind: str, options: WorkerOptions, stop: threading.Event | None = None
    ) -> PipelineWorker:
        """The capture or sink worker, from the same factory `kit up` and the playbook use;
        with a manifest it shares their lock (never two of the same worker)."""
        pipe = self.pipeline()
        name = pipe.capture_worker if kind == "capture" else pipe.sink_worker
        lock = worker_lock(self.var_dir, name) if self.var_dir else None
        return PipelineWorker(
            name, kind, pipe, self.transport(), lock=lock, options=options, stop=stop
        )

    def topics(self, tables: Sequence[str]) -> dict[str, str]:
        out = {}
        for t in tables:
            schema, _, name = t.rpartition(".")
            default = PG_SCHEMA if self.postgres else SOURCE_SCHEMA
            out[t] = topic_name(self.topic_prefix, schema or default, name)
        return out

    def sink_config(self, mapping: MappingSpec, **kwargs: Any) -> SinkConfig:
        topics = tuple(self.topics(mapping.source_tables).values())
        return SinkConfig(
            self.group_for(mapping), topics, dead_letter_store=self.dead_letter_store, **kwargs
        )

    def pg_config(self, tables: Sequence[str], **kwargs: Any) -> pgcap.PgCaptureConfig:
        try:
            return pgcap.PgCaptureConfig(
                tables=tuple(tables),
                slot=self.slot,
                publication=self.publication,
                topic_prefix=self.topic_prefix,
                **kwargs,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None

    def group_for(self, mapping: MappingSpec) -> str:
        return self.group or f"sink-{mapping.service}"


def pass_ctx(f: Callable[..., Any]) -> Callable[..., Any]:
    """Hand the verb the group's Ctx, filled in from the manifest when --service is given."""

    @functools.wraps(f)
    def inner(*args: Any, **kwargs: Any) -> Any:
        obj = click.get_current_context().find_object(Ctx)
        if obj is None:  # pragma: no cover - the group always sets it
            raise click.UsageError("kit cdc: no options context")
        return f(obj.for_service(None), *args, **kwargs)

    return inner


def _tables_or_mapped(obj: Ctx, tables: tuple[str, ...]) -> list[str]:
    """TABLES, or (none given) the source tables of the service's mapping."""
    return list(tables) or obj.mapping().source_tables


@click.group(name="cdc", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--source-url", envvar="CDC_SOURCE_URL", help="Monolith (source) database URL.")
@click.option("--target-url", envvar="CDC_TARGET_URL", help="Service (target) database URL.")
@click.option("--mapping", "mapping_path", envvar="CDC_MAPPING", help="Mapping TOML file.")
@click.option(
    "--log-dir",
    envvar="CDC_LOG_DIR",
    default="var/cdc/log",
    show_default=True,
    help="Directory of the embedded event log.",
)
@click.option(
    "--topic-prefix",
    envvar="CDC_TOPIC_PREFIX",
    default="monolith",
    show_default=True,
    help="Topics are <prefix>.main.<table>.",
)
@click.option("--group", envvar="CDC_GROUP", help="Sink consumer group (default sink-<service>).")
@click.option(
    "--partitions",
    envvar="CDC_PARTITIONS",
    type=int,
    default=4,
    show_default=True,
    help="Partitions of newly created topics.",
)
@click.option(
    "--kafka",
    envvar=["CDC_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP_SERVERS"],
    metavar="BOOTSTRAP",
    help="Use Kafka (host:port,...) instead of the embedded log; other KAFKA_* variables "
    "(security, SASL, TLS, batching) are passed through.",
)
@click.option(
    "--slot",
    envvar="CDC_PG_SLOT",
    default="strangler_cdc",
    show_default=True,
    help="PostgreSQL source: replication slot name.",
)
@click.option(
    "--publication",
    envvar="CDC_PG_PUBLICATION",
    default="strangler_cdc",
    show_default=True,
    help="PostgreSQL source: publication of the captured tables.",
)
@click.option(
    "--dlq-store",
    envvar="CDC_DLQ_STORE",
    type=click.Choice(["table", "topic"]),
    help="Dead letters in the target database (table) or on <topic>.dlq (topic); "
    "default: topic with Kafka, table otherwise.",
)
@click.option(
    "--service",
    "-s",
    "wanted",
    envvar="CDC_SERVICE",
    help="A service of the manifest: its databases, mapping, transport, topic prefix and "
    "group (options override single values).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    source_url: str | None,
    target_url: str | None,
    mapping_path: str | None,
    log_dir: str,
    topic_prefix: str,
    group: str | None,
    partitions: int,
    kafka: str | None,
    slot: str,
    publication: str,
    dlq_store: str | None,
    wanted: str | None,
) -> None:
    """Change data capture: monolith tables → event log → service databases.

    A postgresql:// source is captured by logical decoding (pgoutput, replication slot);
    any other source by triggers into a change table.
    """
    ctx.obj = Ctx(
        source_url,
        target_url,
        mapping_path,
        log_dir,
        topic_prefix,
        group,
        partitions,
        kafka,
        slot,
        publication,
        dlq_store,
        explicit=_explicit(ctx),
        wanted=wanted,
    )


def _explicit(ctx: click.Context) -> frozenset[str]:
    """Options the user gave: on the command line, or by a CDC_* variable (a generic
    KAFKA_BOOTSTRAP_SERVERS does not override the manifest's transport)."""
    out = set()
    for name in _FROM_MANIFEST:
        source = ctx.get_parameter_source(name)
        if source == ParameterSource.COMMANDLINE:
            out.add(name)
        elif source == ParameterSource.ENVIRONMENT:
            if name != "kafka" or os.environ.get("CDC_KAFKA_BOOTSTRAP"):
                out.add(name)
    return frozenset(out)


def _replicated(url: str | None, tables: tuple[str, ...]) -> list[str]:
    """Monolith tables some service of the manifest keeps a replica of: their triggers keep
    the reverse sinks' writes, tagged, as the playbook installs them (none without a
    manifest)."""
    try:
        m = load_manifest()
    except ManifestError:
        return []
    if url != m.monolith.database_url:
        return []
    return [t for t in tables if m.replica_holders(t)]


@cli.command()
@click.argument("tables", nargs=-1)
@click.option(
    "--db", "db_url", envvar="CDC_SOURCE_URL", help="Database URL (default --source-url)."
)
@click.option(
    "--default-identity",
    is_flag=True,
    help="PostgreSQL: keep the tables' replica identity (no before-images; unchanged TOAST "
    "values arrive as placeholders) instead of setting REPLICA IDENTITY FULL.",
)
@pass_ctx
def enable(obj: Ctx, tables: tuple[str, ...], db_url: str | None, default_identity: bool) -> None:
    """Install capture on TABLES (default: the service's mapped tables; idempotent):
    triggers on SQLite, publication + replica identity on PostgreSQL."""
    tables = tuple(_tables_or_mapped(obj, tables))
    url = db_url or obj.source_url
    # a table without a primary key is captured by the key its mapping declares
    keys = declared_keys(obj.mapping()) if obj.mapping_path else {}
    if is_postgres(url):
        try:
            infos = pgcap.enable_capture(
                url or "",
                tables,
                publication=obj.publication,
                replica_identity_full=not default_identity,
                keys=keys,
            )
        except pgcap.CaptureError as exc:
            raise click.ClickException(str(exc)) from None
        print_table(
            ["table", "key", "key from", "columns", "replica identity", "publication"],
            [
                (str(i.ref), ",".join(i.pk), i.key_source, len(i.columns), i.did, obj.publication)
                for i in infos
            ],
        )
        return
    engine = make_engine(db_url) if db_url else obj.source()
    try:
        done = enable_capture(engine, tables, keys, _replicated(url, tables))
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    print_table(
        ["table", "primary key", "columns"],
        [(t.name, ",".join(t.pk), len(t.columns)) for t in done],
    )


@cli.command()
@click.argument("tables", nargs=-1)
@click.option(
    "--db", "db_url", envvar="CDC_SOURCE_URL", help="Database URL (default --source-url)."
)
@pass_ctx
def disable(obj: Ctx, tables: tuple[str, ...], db_url: str | None) -> None:
    """Remove capture from TABLES (default: the service's mapped tables; idempotent):
    triggers, or publication membership."""
    tables = tuple(_tables_or_mapped(obj, tables))
    url = db_url or obj.source_url
    if is_postgres(url):
        try:
            pgcap.disable_capture(url or "", tables, publication=obj.publication)
        except pgcap.CaptureError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"capture disabled on {', '.join(tables)} (the slot stays: kit cdc slot drop)")
        return
    engine = make_engine(db_url) if db_url else obj.source()
    try:
        disable_capture(engine, tables)
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"capture disabled on {', '.join(tables)}")


@cli.command(name="revision")
@click.argument("tables", nargs=-1, required=True)
@click.option(
    "--app",
    default="monolith",
    show_default=True,
    help="Whose Alembic history gets the revision: monolith or a service (manifest name).",
)
@click.option("--message", "-m", help="Revision message (default: capture changes of TABLES).")
@click.option("--rev-id", help="Revision id (default: a random one, as alembic does).")
def revision_cmd(
    tables: tuple[str, ...], app: str, message: str | None, rev_id: str | None
) -> None:
    """Write an Alembic revision on top of APP's own head (its `[<app>.migrations]` folder)
    that installs capture on TABLES (SQLite triggers, or PostgreSQL REPLICA IDENTITY FULL)
    and removes it on downgrade."""
    from kit.appdb import app_database
    from kit.capture_revision import RevisionError, write_capture_revision
    from kit.manifest import ManifestError, load_manifest
    from kit.migrations_spec import MigrationRefused

    try:
        db = app_database(load_manifest(), app)
        path = write_capture_revision(tables, db.migrations, db.runtime, message, rev_id)
    except (RevisionError, ManifestError, MigrationRefused) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))


@cli.command()
@click.argument("tables", nargs=-1)
@click.option(
    "--restart", is_flag=True, help="Start over instead of resuming an unfinished snapshot."
)
@click.option("--chunk", type=int, default=5000, show_default=True, help="Rows per chunk.")
@pass_ctx
def snapshot(obj: Ctx, tables: tuple[str, ...], restart: bool, chunk: int) -> None:
    """Publish existing rows of TABLES (default: the mapping's tables) as op "r" events.

    Runs the capture worker until the snapshot is done, or, when a `kit cdc run` capture
    worker already holds the source, watches it do the work. Resumes an interrupted snapshot.
    """
    names = _tables_or_mapped(obj, tables)
    if obj.postgres:
        _pg_snapshot(obj, names, restart, chunk)
        return
    source = obj.source()
    try:
        request_snapshot(source, names, restart=restart)
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    worker = obj.worker("capture", WorkerOptions(snapshot_chunk=chunk))
    try:
        own = worker.try_acquire()
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    if not own:
        click.echo("a capture worker is running; following its progress")

    def progress() -> tuple[int, int, bool]:
        states = [s for s in snapshot_states(source) if s.table in names]
        done = sum(s.rows_done for s in states)
        total = sum(max(s.rows_total or 0, s.rows_done) for s in states)
        finished = all(s.status == "done" for s in states)
        failed = [s.table for s in states if s.status == "failed"]
        if failed:
            raise click.ClickException(f"snapshot failed for {', '.join(failed)}")
        return done, total, finished

    done, total, finished = progress()
    with click.progressbar(length=max(total, 1), label="snapshot", show_pos=True) as bar:
        bar.update(done)
        shown = done
        try:
            while not finished:
                if own:
                    worker.run_once()
                else:
                    time.sleep(0.5)
                done, total, finished = progress()
                bar.length = max(total, 1)
                bar.update(done - shown)
                shown = done
        finally:
            if own:
                worker.release()
    print_table(
        ["table", "status", "rows", "chunks"],
        [
            (s.table, s.status, s.rows_done, s.chunks_done)
            for s in snapshot_states(source)
            if s.table in names
        ],
    )


def _pg_progress(obj: Ctx, names: Sequence[str]) -> list[pgcap.SnapshotProgress]:
    wanted = {str(pgcap.TableRef.parse(n)) for n in names}
    return [p for p in pgcap.snapshot_progress(obj.source_url or "", obj.slot) if p.table in wanted]


def _pg_snapshot(obj: Ctx, names: list[str], restart: bool, chunk: int) -> None:
    """PostgreSQL: the snapshot belongs to the slot (taken from the snapshot it exports when
    created), so this creates the slot if needed and publishes what is pending, or follows
    the `kit cdc run` worker that holds the slot."""
    url = obj.source_url or ""
    if restart:
        raise click.UsageError(
            "a PostgreSQL snapshot is tied to its slot: drop it (kit cdc slot drop "
            f"{obj.slot}) and snapshot again to start over"
        )
    busy = any(s.name == obj.slot and s.active for s in pgcap.list_slots(url))
    stop = threading.Event()
    errors: list[BaseException] = []
    options = WorkerOptions(capture_tables=tuple(names), snapshot_chunk=chunk)
    worker = None if busy else capture_worker(obj.pipeline(), obj.transport(), options)
    if worker is None:
        click.echo("a capture worker holds the slot; following its progress")
    else:
        try:
            worker.prepare()
        except pgcap.CaptureError as exc:
            worker.close()
            raise click.ClickException(str(exc)) from None

    def work() -> None:
        try:
            assert worker is not None
            worker.run_snapshot(stop)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True) if worker else None
    if thread:
        thread.start()

    def totals() -> tuple[int, int, bool]:
        states = _pg_progress(obj, names)
        done = sum(s.rows_done for s in states)
        total = sum(max(s.rows_total or 0, s.rows_done) for s in states)
        return done, total, bool(states) and all(s.status in ("done", "skipped") for s in states)

    try:
        with click.progressbar(length=1, label="snapshot", show_pos=True) as bar:
            shown = 0
            while True:
                done, total, finished = totals()
                bar.length = max(total, 1)
                bar.update(done - shown)
                shown = done
                if finished or errors or (thread is not None and not thread.is_alive()):
                    break
                time.sleep(0.3)
    finally:
        stop.set()
        if thread:
            thread.join(30)
        if worker:
            worker.close()
    if errors:
        raise click.ClickException(f"snapshot failed: {errors[0]}")
    print_table(
        ["table", "status", "mode", "rows", "chunks"],
        [(s.table, s.status, s.mode, s.rows_done, s.chunks_done) for s in _pg_progress(obj, names)],
    )


@cli.command()
@click.option("--capture/--no-capture", default=True, help="Run the capture worker.")
@click.option("--sink/--no-sink", default=True, help="Run the sink worker.")
@click.option("--exit-when-idle", is_flag=True, help="Stop once nothing is left to do.")
@click.option("--batch", type=int, default=2000, show_default=True, help="Events per batch.")
@click.option(
    "--table",
    "capture_tables",
    multiple=True,
    help="PostgreSQL capture: tables to capture (default: the mapping's source tables).",
)
@click.option(
    "--resnapshot",
    is_flag=True,
    help="PostgreSQL capture: when the slot was lost, create a new one and snapshot again.",
)
@click.argument("service", required=False)
@pass_ctx
def run(
    obj: Ctx,
    service: str | None,
    capture: bool,
    sink: bool,
    exit_when_idle: bool,
    batch: int,
    capture_tables: tuple[str, ...],
    resnapshot: bool,
) -> None:
    """Run the capture and/or sink worker loops until SIGTERM/SIGINT (clean stop).

    SERVICE (or --service) takes everything from the manifest; the workers are the ones `kit
    up` runs (same factory, same locks: never two of the same worker)."""
    obj = obj.for_service(service)
    if not capture and not sink:
        raise click.UsageError("nothing to run: both --no-capture and --no-sink given")
    if capture and not obj.source_url:
        raise click.UsageError("no source database: pass --source-url or set CDC_SOURCE_URL")
    stop = threading.Event()
    idle = {"capture": not capture, "sink": not sink}
    errors: list[BaseException] = []
    options = WorkerOptions(
        batch_size=batch,
        resnapshot=resnapshot,
        capture_tables=capture_tables,
        dead_letter_store=obj.dead_letter_store,
    )
    workers = [
        obj.worker(kind, options, stop)
        for kind, wanted in (("capture", capture), ("sink", sink))
        if wanted
    ]

    def loop(worker: PipelineWorker) -> Callable[[], None]:
        quiet_needed = 3 if worker.pg_capture else 1  # a few quiet waits: the server sent all

        def body() -> None:
            quiet = 0
            # acquired in its own thread: a SQLite connection stays in the thread that made it
            if not worker.try_acquire():
                raise RuntimeError(
                    f"{worker.name} is running elsewhere (kit up?)"
                    + (f": {worker.busy}" if worker.busy else "")
                )
            try:
                if worker.kind == "sink" and exit_when_idle:
                    worker.wait_for_assignment(60.0)  # Kafka: the group join comes first
                while not stop.is_set():
                    n = worker.run_once()
                    quiet = 0 if n else quiet + 1
                    idle[worker.kind] = quiet >= quiet_needed
                    if worker.dead:
                        click.echo(f"{worker.dead} event(s) dead-lettered", err=True)
                    if exit_when_idle and all(idle.values()):
                        stop.set()
                    elif not n:
                        stop.wait(worker.idle_wait_s)
            finally:
                worker.release()

        return body

    loops = [loop(w) for w in workers]

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def inner() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported and ends the process
                errors.append(exc)
                stop.set()

        return inner

    threads = [threading.Thread(target=guarded(fn), daemon=True) for fn in loops]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.2)
    if errors:
        raise click.ClickException(f"worker failed: {errors[0].__class__.__name__}: {errors[0]}")
    click.echo("stopped cleanly")


def _each_service(obj: Ctx, service: str | None) -> list[Ctx]:
    """The contexts a report covers: the named service, else the options' mapping, else
    every service of the manifest."""
    if service or obj.wanted:
        return [obj.for_service(service)]
    if obj.mapping_path:
        return [obj]
    return [obj.for_service(name) for name in obj.services()]


def _report(obj: Ctx, service: str | None, one: Callable[[Ctx], int]) -> None:
    """Run `one` per covered service (headed by its name when several); exit with the
    worst code."""
    targets = _each_service(obj, service)
    worst = 0
    for sub in targets:
        if len(targets) > 1:
            click.echo(f"== {sub.service}")
        worst = max(worst, one(sub))
    if worst:
        sys.exit(worst)


@cli.command()
@click.argument("service", required=False)
@pass_ctx
def status(obj: Ctx, service: str | None) -> None:
    """Per table: captured position, published and applied events, lag, dead letters
    (of SERVICE; without one and without --mapping, of every service of the manifest)."""
    _report(obj, service, _status_one)


def _status_one(obj: Ctx) -> int:
    mapping = obj.mapping()
    tables = mapping.source_tables
    topics = obj.topics(tables)
    transport = obj.shared_transport()
    rows = pipeline_status(
        tables=tables,
        topics=topics,
        transport=transport,
        source=obj.source() if obj.source_url else None,
        target=obj.target() if obj.target_url else None,
        group=obj.group_for(mapping),
        slot=obj.slot,
    )
    dead: dict[str, int | None] = {r.table: r.dead_letters for r in rows}
    if obj.dead_letter_store == "topic":  # every group's dead letters on <topic>.dlq
        ends = transport.end_offsets([topics[t] + DLQ_SUFFIX for t in tables])
        for t in tables:
            dead[t] = sum(o for tp, o in ends.items() if tp.topic == topics[t] + DLQ_SUFFIX)

    def secs(v: float | None) -> str | None:
        return None if v is None else f"{v:.1f}s"

    if obj.postgres:
        capture_headers = ["slot lsn", "slot lag B", "snapshot"]
        capture_cells = [(r.slot_confirmed_lsn, r.slot_lag_bytes, r.snapshot) for r in rows]
    else:
        capture_headers = ["captured seq", "to capture", "capture lag"]
        capture_cells = [(r.captured_seq, r.pending_capture, secs(r.capture_lag_s)) for r in rows]
    print_table(
        [
            "table",
            "group",
            *capture_headers,
            "published",
            "applied",
            "lag",
            "lag s",
            "group lag",
            "dead",
        ],
        [
            (
                r.table,
                r.group,
                *cap,
                r.published,
                r.applied,
                r.lag_events,
                secs(r.lag_s),
                r.group_lag,
                dead[r.table],
            )
            for r, cap in zip(rows, capture_cells, strict=True)
        ],
    )
    for r in rows:
        if r.capture_drift:
            click.echo(
                f"capture drift on {r.table}: {r.capture_drift} (a running capture worker "
                "re-installs repairable triggers and snapshots the table when it notices)"
            )
    return 2 if any(dead.values()) else 0


@cli.command(name="verify")
@click.argument("service", required=False)
@click.option("--table", "tables", multiple=True, help="Only these source tables.")
@click.option("--chunk", type=int, default=5000, show_default=True, help="Rows per chunk.")
@pass_ctx
def verify_cmd(obj: Ctx, service: str | None, tables: tuple[str, ...], chunk: int) -> None:
    """Compare source and target through the mapping; exit 1 on any difference (SERVICE;
    without one and without --mapping, every service of the manifest)."""
    _report(obj, service, lambda sub: _verify_one(sub, tables, chunk))


def _verify_one(obj: Ctx, tables: tuple[str, ...], chunk: int) -> int:
    mapping = obj.mapping(with_replicas=True)
    try:
        report = verify(obj.source(), obj.target(), mapping, list(tables) or None, chunk)
    except (VerifyError, MappingError) as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"{mapping.service}: database error: {exc}") from None
    print_table(
        ["source", "target", "source rows", "target rows", "missing", "extra", "differing"],
        [
            (
                t.source,
                t.target,
                t.source_rows,
                t.target_rows,
                t.missing_count,
                t.extra_count,
                t.differing_count,
            )
            for t in report.tables
        ],
    )
    for t in report.tables:
        for key in t.missing:
            click.echo(f"missing in {t.target}: {format_key(t.key_columns, key)}")
        for key in t.extra:
            click.echo(f"extra in {t.target}: {format_key(t.key_columns, key)}")
        for key, cols in t.differing:
            click.echo(
                f"differs in {t.target}: {format_key(t.key_columns, key)} columns {', '.join(cols)}"
            )
        for msg in t.unmappable:
            click.echo(f"cannot map {t.source} row {msg}")
    if not report.ok:
        click.echo(f"verify: {report.differences} difference(s)", err=True)
        return 1
    click.echo("verify: source and target match")
    return 0


@cli.group()
def dlq() -> None:
    """Inspect, retry or drop dead-lettered events (target database or <topic>.dlq)."""


@dlq.command(name="list")
@click.option("--limit", type=int, default=50, show_default=True)
@pass_ctx
def dlq_list(obj: Ctx, limit: int) -> None:
    """List dead letters of the group, oldest first (id = row id, or offset on <topic>.dlq)."""
    mapping = obj.mapping()
    store = obj.dead_letter_store
    letters = list_any_dead_letters(
        store,
        target=obj.target() if store == "table" else None,
        transport=obj.shared_transport() if store == "topic" else None,
        topics=obj.topics(mapping.source_tables).values(),
        group=obj.group_for(mapping),
        limit=limit,
    )
    print_table(
        ["id", "topic", "partition", "offset", "attempts", "reason"],
        [(d.id, d.topic, d.partition, d.offset, d.attempts, d.reason[:120]) for d in letters],
    )


@dlq.command(name="retry")
@click.argument("ids", nargs=-1, type=int)
@pass_ctx
def dlq_retry(obj: Ctx, ids: tuple[int, ...]) -> None:
    """Re-apply dead letters IDS (default: all) after fixing the mapping or target."""
    _table_store_only(obj, "retried")
    mapping = obj.mapping()
    topics = tuple(obj.topics(mapping.source_tables).values())
    try:
        sink = Sink(
            obj.target(), mapping, obj.transport(), SinkConfig(obj.group_for(mapping), topics)
        )
    except SinkError as exc:
        raise click.ClickException(str(exc)) from None
    ok, failed = retry_dead_letters(sink, ids or None)
    click.echo(f"retried: {ok} applied, {failed} still failing")
    if failed:
        sys.exit(1)


@dlq.command(name="drop")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "drop_all", is_flag=True, help="Drop every dead letter of the group.")
@pass_ctx
def dlq_drop(obj: Ctx, ids: tuple[int, ...], drop_all: bool) -> None:
    """Delete dead letters IDS (or --all)."""
    if not ids and not drop_all:
        raise click.UsageError("name dead-letter ids to drop, or pass --all")
    _table_store_only(obj, "dropped")
    mapping = obj.mapping()
    n = drop_dead_letters(obj.target(), None if drop_all else ids, obj.group_for(mapping))
    click.echo(f"dropped {n} dead letter(s)")


def _table_store_only(obj: Ctx, verb: str) -> None:
    if obj.dead_letter_store == "topic":
        raise click.ClickException(
            f"dead letters on <topic>.dlq topics cannot be {verb} here (a topic is an "
            "append-only log): read them with `kit cdc dlq list`, re-publish fixed events to the "
            "source topic, and let the topic's retention remove them"
        )


@cli.group()
def slot() -> None:
    """PostgreSQL replication slots: list them, drop forgotten ones (they hold WAL back)."""


@slot.command(name="list")
@click.option("--url", envvar="CDC_SOURCE_URL", help="PostgreSQL URL (default --source-url).")
@pass_ctx
def slot_list(obj: Ctx, url: str | None) -> None:
    """Every replication slot of the server, with the WAL it keeps (lag_bytes)."""
    url = url or obj.source_url
    if not is_postgres(url):
        raise click.UsageError("slots need a postgresql:// URL: pass --url or --source-url")
    try:
        slots = pgcap.list_slots(url or "")
    except Exception as exc:  # noqa: BLE001 - connection errors, shown plainly
        raise click.ClickException(f"cannot list slots: {exc}") from None
    print_table(
        [
            "name",
            "plugin",
            "database",
            "active",
            "active_pid",
            "confirmed_flush_lsn",
            "lag_bytes",
            "wal_status",
        ],
        [
            (
                s.name,
                s.plugin,
                s.database,
                "yes" if s.active else "no",
                s.active_pid,
                s.confirmed_flush_lsn,
                s.lag_bytes,
                s.wal_status,
            )
            for s in slots
        ],
    )


@slot.command(name="drop")
@click.argument("name")
@click.option("--force", is_flag=True, help="Terminate the backend holding an active slot.")
@click.option("--url", envvar="CDC_SOURCE_URL", help="PostgreSQL URL (default --source-url).")
@pass_ctx
def slot_drop(obj: Ctx, name: str, force: bool, url: str | None) -> None:
    """Drop replication slot NAME and its snapshot state (changes not delivered are lost)."""
    url = url or obj.source_url
    if not is_postgres(url):
        raise click.UsageError("slots need a postgresql:// URL: pass --url or --source-url")
    try:
        pgcap.drop_slot(url or "", name, force=force)
    except pgcap.CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"dropped replication slot {name}")


if __name__ == "__main__":
    cli()
