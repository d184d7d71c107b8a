"""`kit cdc ...`: set up, run, observe and verify change data capture.

Until the migration manifest exists, the databases, mapping and log are given as options
(with environment-variable defaults): --source-url (CDC_SOURCE_URL), --target-url
(CDC_TARGET_URL), --mapping (CDC_MAPPING), --log-dir (CDC_LOG_DIR), --topic-prefix
(CDC_TOPIC_PREFIX), --group (CDC_GROUP, default ``sink-<service>``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from cdc.capture import postgres as pgcap
from cdc.capture.sqlite import (
    CaptureBusy,
    CaptureConfig,
    CaptureError,
    CaptureWorker,
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
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from cdc.verify import VerifyError, format_key, verify
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
    _transport: Transport | None = None

    @property
    def postgres(self) -> bool:
        return is_postgres(self.source_url)

    @property
    def dead_letter_store(self) -> str:
        """Dead letters: on `<topic>.dlq` with Kafka, in the target database otherwise."""
        return self.dlq_store or ("topic" if self.kafka else "table")

    def mapping(self) -> MappingSpec:
        if not self.mapping_path:
            raise click.UsageError("no mapping: pass --mapping PATH or set CDC_MAPPING")
        try:
            return load_mapping(self.mapping_path)
        except MappingError as exc:
            raise click.ClickException(str(exc)) from None

    def source(self):  # noqa: ANN201 - sqlalchemy Engine
        if not self.source_url:
            raise click.UsageError("no source database: pass --source-url or set CDC_SOURCE_URL")
        return make_engine(self.source_url)

    def target(self):  # noqa: ANN201
        if not self.target_url:
            raise click.UsageError("no target database: pass --target-url or set CDC_TARGET_URL")
        return make_engine(self.target_url)

    def transport(self) -> Transport:
        """Kafka when --kafka / $KAFKA_BOOTSTRAP_SERVERS is given (other KAFKA_* settings:
        security, SASL, TLS, batching, are read by KafkaConfig.from_env), else the embedded log."""
        if self.kafka:
            from cdc.transport.kafka import KafkaConfig, KafkaTransport

            overrides: dict[str, Any] = {"bootstrap_servers": self.kafka}
            if "KAFKA_PARTITIONS" not in os.environ:
                overrides["partitions"] = self.partitions
            try:
                return KafkaTransport(KafkaConfig.from_env(**overrides))
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--kafka / KAFKA_*") from None
        return EmbeddedLog(EmbeddedLogConfig(self.log_dir, partitions=self.partitions))

    def shared_transport(self) -> Transport:
        """One transport per command (read-only uses: status, dlq list)."""
        if self._transport is None:
            self._transport = self.transport()
        return self._transport

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


pass_ctx = click.make_pass_decorator(Ctx)


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
    )


@cli.command()
@click.argument("tables", nargs=-1, required=True)
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
    """Install capture on TABLES (idempotent): triggers on SQLite, publication + replica
    identity on PostgreSQL."""
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
        done = enable_capture(engine, tables, keys)
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    print_table(
        ["table", "primary key", "columns"],
        [(t.name, ",".join(t.pk), len(t.columns)) for t in done],
    )


@cli.command()
@click.argument("tables", nargs=-1, required=True)
@click.option(
    "--db", "db_url", envvar="CDC_SOURCE_URL", help="Database URL (default --source-url)."
)
@pass_ctx
def disable(obj: Ctx, tables: tuple[str, ...], db_url: str | None) -> None:
    """Remove capture from TABLES (idempotent): triggers, or publication membership."""
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
@click.option("--database", default="monolith", show_default=True, help="Alembic environment.")
@click.option("--message", "-m", help="Revision message (default: capture changes of TABLES).")
@click.option("--rev-id", help="Revision id (default: a random one, as alembic does).")
@click.option(
    "--migrations-dir",
    envvar="KIT_MIGRATIONS_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding <database>/env.py (default: the kit's migrations/).",
)
def revision_cmd(
    tables: tuple[str, ...],
    database: str,
    message: str | None,
    rev_id: str | None,
    migrations_dir: Path | None,
) -> None:
    """Write an Alembic revision on top of the current head that installs capture on TABLES
    (SQLite triggers, or PostgreSQL REPLICA IDENTITY FULL) and removes it on downgrade."""
    from kit.capture_revision import RevisionError, write_capture_revision

    try:
        path = write_capture_revision(tables, database, message, migrations_dir, rev_id)
    except RevisionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))


def _capture_worker(obj: Ctx, chunk: int | None = None) -> CaptureWorker:
    cfg = CaptureConfig(
        topic_prefix=obj.topic_prefix, **({"snapshot_chunk": chunk} if chunk else {})
    )
    try:
        return CaptureWorker(obj.source_url or "", obj.transport(), cfg)
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None


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
    names = list(tables) or obj.mapping().source_tables
    if obj.postgres:
        _pg_snapshot(obj, names, restart, chunk)
        return
    source = obj.source()
    try:
        request_snapshot(source, names, restart=restart)
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    worker = _capture_worker(obj, chunk)
    try:
        worker.acquire()
        own = True
    except CaptureBusy:
        worker.close()
        own = False
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
                worker.close()
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
    worker = (
        None
        if busy
        else pgcap.PgCaptureWorker(url, obj.transport(), obj.pg_config(names, snapshot_chunk=chunk))
    )
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
@pass_ctx
def run(
    obj: Ctx,
    capture: bool,
    sink: bool,
    exit_when_idle: bool,
    batch: int,
    capture_tables: tuple[str, ...],
    resnapshot: bool,
) -> None:
    """Run the capture and/or sink worker loops until SIGTERM/SIGINT (clean stop)."""
    if not capture and not sink:
        raise click.UsageError("nothing to run: both --no-capture and --no-sink given")
    stop = threading.Event()
    idle = {"capture": not capture, "sink": not sink}
    errors: list[BaseException] = []
    loops: list[Callable[[], None]] = []

    if capture and obj.postgres:
        tables = list(capture_tables) or obj.mapping().source_tables
        pworker = pgcap.PgCaptureWorker(
            obj.source_url or "",
            obj.transport(),
            obj.pg_config(tables, batch_size=batch, resnapshot_if_slot_lost=resnapshot),
        )

        def pg_capture_loop() -> None:
            try:
                pworker.prepare()
                if not pworker.run_snapshot(stop):
                    return
                pworker.start_stream()
                empty = 0
                while not stop.is_set():
                    n = pworker.poll(pworker.config.idle_wait_s)
                    empty = 0 if n else empty + 1
                    idle["capture"] = empty >= 3  # a few quiet waits: the server sent all
                    if n == 0 and exit_when_idle and all(idle.values()):
                        stop.set()
                pworker.flush()
            finally:
                pworker.close()

        loops.append(pg_capture_loop)
    elif capture:
        cworker = (
            CaptureWorker(
                obj.source_url or "",
                obj.transport(),
                CaptureConfig(topic_prefix=obj.topic_prefix, batch_size=batch),
            )
            if obj.source_url
            else None
        )
        if cworker is None:
            raise click.UsageError("no source database: pass --source-url or set CDC_SOURCE_URL")
        try:
            cworker.acquire()
        except CaptureBusy as exc:
            cworker.close()
            raise click.ClickException(str(exc)) from None

        def capture_loop() -> None:
            try:
                while not stop.is_set():
                    n = cworker.run_once()
                    idle["capture"] = n == 0
                    if n == 0:
                        if exit_when_idle and all(idle.values()):
                            stop.set()
                        stop.wait(cworker.config.poll_interval_s)
            finally:
                cworker.close()

        loops.append(capture_loop)

    if sink:
        mapping = obj.mapping()
        try:
            sworker = Sink(
                obj.target(),
                mapping,
                obj.transport(),
                obj.sink_config(mapping, batch_size=batch),
            )
        except (SinkError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None

        def sink_loop() -> None:
            try:
                sworker.start()
                wait = getattr(sworker.consumer, "wait_for_assignment", None)
                if exit_when_idle and wait is not None:
                    wait(60.0)  # Kafka: empty polls before the group join are not "idle"
                while not stop.is_set():
                    result = sworker.run_once()
                    idle["sink"] = sworker.last_batch_size == 0
                    if result.dead:
                        click.echo(f"{result.dead} event(s) dead-lettered", err=True)
                    if exit_when_idle and all(idle.values()):
                        stop.set()
            finally:
                sworker.close()

        loops.append(sink_loop)

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


@cli.command()
@pass_ctx
def status(obj: Ctx) -> None:
    """Per table: captured position, published and applied events, lag, dead letters."""
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
    if any(dead.values()):
        sys.exit(2)


@cli.command(name="verify")
@click.argument("service", required=False)
@click.option("--table", "tables", multiple=True, help="Only these source tables.")
@click.option("--chunk", type=int, default=5000, show_default=True, help="Rows per chunk.")
@pass_ctx
def verify_cmd(obj: Ctx, service: str | None, tables: tuple[str, ...], chunk: int) -> None:
    """Compare source and target through the mapping; exit 1 on any difference."""
    mapping = obj.mapping()
    if service and service != mapping.service:
        raise click.UsageError(
            f"mapping {obj.mapping_path} is for service {mapping.service!r}, not {service!r}"
        )
    try:
        report = verify(obj.source(), obj.target(), mapping, list(tables) or None, chunk)
    except (VerifyError, MappingError) as exc:
        raise click.ClickException(str(exc)) from None
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
        sys.exit(1)
    click.echo("verify: source and target match")


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
