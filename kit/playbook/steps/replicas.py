"""Read-only replicas of reference data (the manifest's `replicas`), in the steps.

A replica has its own pipeline (`kit.playbook.pipelines.replica_pipeline`): it starts with
the service's `capture` step (capture, snapshot, stream, write guard in the service DB), is
compared by `verify`, is left alone by `writes` (which switches direction only for the
tables the service owns) and by `retire`, and stops only when `capture` is rolled back.

It follows whichever side writes the table: once another service owns the table's writes
(its `writes` step), that service's changes reach the monolith through its reverse sink, and
the replica's capture takes those too (SQLite: the monolith's triggers on replicated tables
record sink-applied changes tagged with their origin, which only replica sinks apply;
PostgreSQL: the replica's own slot runs with `origin = any`). The owner's `retire` keeps its
reverse CDC running while a replica of its tables is declared.
"""

from __future__ import annotations

from typing import Any

from kit.playbook import pipelines as pl
from kit.playbook.framework import Ctx, StepFailed
from kit.playbook.ownership import MONOLITH, table_writer
from kit.playbook.steps.common import (
    clear_target,
    drain,
    start_capture,
    stop_pg_capture,
    stop_sink_for_rollback,
)


def start(ctx: Ctx) -> pl.Pipeline | None:
    """Capture the replica tables on the monolith, snapshot them, guard the copies against
    writes and want the replica workers. Drained by `drain_replicas`."""
    from cdc.readonly import protect

    rep = ctx.root.replica(ctx.s.name)
    if rep is None:
        return None
    tables = rep.source_tables
    start_capture(ctx, rep, f"replicas {', '.join(tables)}")
    target = pl.make_engine(rep.target_url)
    try:
        protect(target, rep.target_tables)
    except Exception as exc:  # noqa: BLE001 - a missing target table, named
        raise StepFailed(
            f"cannot guard replica tables {', '.join(rep.target_tables)} of {ctx.s.name}: {exc}"
        ) from None
    finally:
        target.dispose()
    ctx.root.state.want_worker(rep.capture_worker, True, f"replica capture of {ctx.s.name}")
    ctx.root.state.want_worker(rep.sink_worker, True, f"replica sink of {ctx.s.name}")
    ctx.say(
        f"capture: read-only replicas {', '.join(tables)} -> {', '.join(rep.target_tables)} "
        f"({rep.sink_worker}; writes to them refused in {ctx.s.name}'s database)"
    )
    return rep


def drain_replicas(ctx: Ctx) -> dict[str, Any] | None:
    rep = ctx.root.replica(ctx.s.name)
    return None if rep is None else drain(ctx, rep)


def check(ctx: Ctx) -> None:
    """Replica snapshots done, capture on, write guard installed."""
    from cdc.readonly import protected

    rep = ctx.root.replica(ctx.s.name)
    if rep is None:
        return
    states = {t: st for t, (st, _n) in pl.snapshot_summary(rep).items()}
    bad = [
        f"{t}: {states.get(t, 'never requested')}"
        for t in rep.source_tables
        if states.get(t) != "done"
    ]
    if bad:
        raise StepFailed(f"replica snapshot not finished ({', '.join(bad)})")
    off = [t for t, on in pl.pipe_capture_enabled(rep).items() if not on]
    if off:
        raise StepFailed(f"capture is not enabled on replica table(s) {', '.join(off)}")
    target = pl.make_engine(rep.target_url)
    try:
        open_ = [t for t, on in protected(target, rep.target_tables).items() if not on]
    finally:
        target.dispose()
    if open_:
        raise StepFailed(f"replica table(s) {', '.join(open_)} accept writes (guard missing)")


def stop(ctx: Ctx) -> None:
    """Capture rollback: replica sink off, capture off (SQLite triggers another pipeline still
    reads stay), guard removed, copies emptied."""
    from cdc.readonly import unprotect

    rep = ctx.root.replica(ctx.s.name)
    if rep is None:
        return
    stop_sink_for_rollback(ctx, rep)
    pl.disable_pipe_capture(ctx.m, rep, drop=False)
    stop_pg_capture(ctx, rep)
    target = pl.make_engine(rep.target_url)
    try:
        unprotect(target, rep.target_tables)
    finally:
        target.dispose()
    clear_target(rep)
    ctx.say(f"capture: replica feed of {', '.join(rep.source_tables)} stopped; copies emptied")


def capture_refusals(ctx: Ctx) -> list[str]:
    """A replica is snapshotted and fed from the monolith's copy, which follows a table owned
    by a service only while that service's reverse CDC runs: refused for a table whose owner
    retired with reverse CDC stopped (its retire keeps it running for replicas declared at
    the time; one declared later finds the monolith's copy stale)."""
    wanted = {n for n, on in ctx.root.state.workers().items() if on}
    out = []
    for table in ctx.s.replicas:
        writer = table_writer(ctx.m, ctx.root.state, table)
        if writer == MONOLITH:
            continue
        rev = ctx.root.reverse(writer)
        if rev.sink_worker not in wanted:
            out.append(
                f"replica: {table!r} is written by service {writer!r}, whose reverse CDC is "
                f"stopped, so the monolith's copy of {table!r} (which feeds a replica) is "
                f"stale; way forward: `kit rollback {writer}` (retire: reverse CDC restarted "
                f"and resynchronised), then capture {ctx.s.name} (or force)"
            )
    return out
