"""`kit cdc ...`: set up, run, observe and verify change data capture.

Until the migration manifest exists, the databases, mapping and log are given as options
(with environment-variable defaults): --source-url (CDC_SOURCE_URL), --target-url
(CDC_TARGET_URL), --mapping (CDC_MAPPING), --log-dir (CDC_LOG_DIR), --topic-prefix
(CDC_TOPIC_PREFIX), --group (CDC_GROUP, default ``sink-<service>``).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

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
from cdc.db import make_engine
from cdc.events import topic_name
from cdc.mapping import MappingError, MappingSpec, load_mapping
from cdc.ports import Transport
from cdc.sink import (
    Sink,
    SinkConfig,
    SinkError,
    drop_dead_letters,
    list_dead_letters,
    retry_dead_letters,
)
from cdc.status import pipeline_status
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from cdc.verify import VerifyError, format_key, verify

SOURCE_SCHEMA = "main"


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
        if self.kafka:
            from cdc.transport.kafka import KafkaConfig, KafkaTransport

            try:
                return KafkaTransport(
                    KafkaConfig(bootstrap_servers=self.kafka, partitions=self.partitions)
                )
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--kafka") from None
        return EmbeddedLog(EmbeddedLogConfig(self.log_dir, partitions=self.partitions))

    def topics(self, tables: Sequence[str]) -> dict[str, str]:
        return {t: topic_name(self.topic_prefix, SOURCE_SCHEMA, t) for t in tables}

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
    envvar="CDC_KAFKA_BOOTSTRAP",
    help="Use Kafka (host:port,...) instead of the embedded log.",
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
) -> None:
    """Change data capture: monolith tables → event log → service databases."""
    ctx.obj = Ctx(
        source_url, target_url, mapping_path, log_dir, topic_prefix, group, partitions, kafka
    )


@cli.command()
@click.argument("tables", nargs=-1, required=True)
@click.option(
    "--db", "db_url", envvar="CDC_SOURCE_URL", help="Database URL (default --source-url)."
)
@pass_ctx
def enable(obj: Ctx, tables: tuple[str, ...], db_url: str | None) -> None:
    """Install capture triggers on TABLES (idempotent; refreshes after ALTER TABLE)."""
    engine = make_engine(db_url) if db_url else obj.source()
    try:
        done = enable_capture(engine, tables)
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
    """Remove capture triggers from TABLES (idempotent)."""
    engine = make_engine(db_url) if db_url else obj.source()
    try:
        disable_capture(engine, tables)
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"capture disabled on {', '.join(tables)}")


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


@cli.command()
@click.option("--capture/--no-capture", default=True, help="Run the capture worker.")
@click.option("--sink/--no-sink", default=True, help="Run the sink worker.")
@click.option("--exit-when-idle", is_flag=True, help="Stop once nothing is left to do.")
@click.option("--batch", type=int, default=2000, show_default=True, help="Events per batch.")
@pass_ctx
def run(obj: Ctx, capture: bool, sink: bool, exit_when_idle: bool, batch: int) -> None:
    """Run the capture and/or sink worker loops until SIGTERM/SIGINT (clean stop)."""
    if not capture and not sink:
        raise click.UsageError("nothing to run: both --no-capture and --no-sink given")
    stop = threading.Event()
    idle = {"capture": not capture, "sink": not sink}
    errors: list[BaseException] = []
    loops: list[Callable[[], None]] = []

    if capture:
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
        topics = tuple(obj.topics(mapping.source_tables).values())
        try:
            sworker = Sink(
                obj.target(),
                mapping,
                obj.transport(),
                SinkConfig(obj.group_for(mapping), topics, batch_size=batch),
            )
        except SinkError as exc:
            raise click.ClickException(str(exc)) from None

        def sink_loop() -> None:
            try:
                sworker.start()
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
    rows = pipeline_status(
        tables=tables,
        topics=obj.topics(tables),
        transport=obj.transport(),
        source=obj.source() if obj.source_url else None,
        target=obj.target() if obj.target_url else None,
        group=obj.group_for(mapping),
    )

    def secs(v: float | None) -> str | None:
        return None if v is None else f"{v:.1f}s"

    print_table(
        [
            "table",
            "group",
            "captured seq",
            "to capture",
            "capture lag",
            "published",
            "applied",
            "lag",
            "lag s",
            "dead",
        ],
        [
            (
                r.table,
                r.group,
                r.captured_seq,
                r.pending_capture,
                secs(r.capture_lag_s),
                r.published,
                r.applied,
                r.lag_events,
                secs(r.lag_s),
                r.dead_letters,
            )
            for r in rows
        ],
    )
    if any(r.dead_letters for r in rows):
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
    """Inspect, retry or drop dead-lettered events (stored in the target database)."""


@dlq.command(name="list")
@click.option("--limit", type=int, default=50, show_default=True)
@pass_ctx
def dlq_list(obj: Ctx, limit: int) -> None:
    """List dead letters of the group, oldest first."""
    mapping = obj.mapping()
    letters = list_dead_letters(obj.target(), obj.group_for(mapping), limit)
    print_table(
        ["id", "topic", "partition", "offset", "attempts", "reason"],
        [(d.id, d.topic, d.partition, d.offset, d.attempts, d.reason[:120]) for d in letters],
    )


@dlq.command(name="retry")
@click.argument("ids", nargs=-1, type=int)
@pass_ctx
def dlq_retry(obj: Ctx, ids: tuple[int, ...]) -> None:
    """Re-apply dead letters IDS (default: all) after fixing the mapping or target."""
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
    mapping = obj.mapping()
    n = drop_dead_letters(obj.target(), None if drop_all else ids, obj.group_for(mapping))
    click.echo(f"dropped {n} dead letter(s)")


if __name__ == "__main__":
    cli()
