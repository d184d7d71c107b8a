"""`capture` (triggers or logical decoding, snapshot, forward CDC) and `verify`."""

from __future__ import annotations

import time

from kit.playbook import pipelines as pl
from kit.playbook.framework import Ctx, Step, StepFailed
from kit.playbook.steps import replicas
from kit.playbook.steps.common import (
    clear_target,
    count_rows,
    drain,
    start_capture,
    stop_pg_capture,
    stop_sink_for_rollback,
    update_monolith_capture_wish,
)


class CaptureStep(Step):
    name = "capture"

    def preconditions(self, ctx: Ctx) -> list[str]:
        return replicas.capture_refusals(ctx)

    def action(self, ctx: Ctx) -> None:
        pipe = ctx.root.forward(ctx.s.name)
        tables = list(ctx.s.tables)
        start_capture(ctx, pipe, ", ".join(tables))
        if pipe.pg_source:
            ctx.say(
                f"capture: monolith tables {', '.join(tables)} published in {pipe.publication}; "
                f"logical decoding through slot {pipe.slot}"
            )
            ctx.say(
                "capture: snapshot "
                + (
                    "resumed from its last finished chunk"
                    if ctx.continuing
                    else "taken when the slot is created"
                )
            )
        else:
            ctx.say(f"capture: triggers installed on monolith tables {', '.join(tables)}")
            ctx.say(
                "capture: snapshot "
                + ("resumed from its last finished chunk" if ctx.continuing else "requested")
            )
        ctx.root.state.want_worker(pipe.capture_worker, True, f"forward capture of {ctx.s.name}")
        ctx.root.state.want_worker(pipe.sink_worker, True, f"forward sink of {ctx.s.name}")
        replicas.start(ctx)
        ctx.fault_point(self.name)
        ctx.evidence["drain"] = drain(ctx, pipe)
        replica_drain = replicas.drain_replicas(ctx)
        if replica_drain is not None:
            ctx.evidence["replica_drain"] = replica_drain
        ctx.evidence["snapshot"] = self._snapshot(ctx)
        rep = ctx.root.replica(ctx.s.name)
        ctx.evidence["target_rows"] = count_rows(
            pipe.target_url, pipe.target_tables + (rep.target_tables if rep else [])
        )
        rows = ", ".join(f"{t} {n}" for t, n in ctx.evidence["snapshot"].items())
        ctx.say(f"capture: snapshot done ({rows}); streaming into {ctx.s.name}")

    def _snapshot(self, ctx: Ctx) -> dict[str, int]:
        summary = pl.snapshot_summary(ctx.root.forward(ctx.s.name))
        rep = ctx.root.replica(ctx.s.name)
        if rep is not None:
            summary = {**summary, **pl.snapshot_summary(rep)}
        wanted = (*ctx.s.tables, *ctx.s.replicas)
        return {t: n for t, (_st, n) in summary.items() if t in wanted}

    def check(self, ctx: Ctx) -> None:
        pipe = ctx.root.forward(ctx.s.name)
        states = {t: st for t, (st, _n) in pl.snapshot_summary(pipe).items()}
        bad = [
            f"{t}: {states.get(t, 'never requested')}"
            for t in ctx.s.tables
            if states.get(t) != "done"
        ]
        if bad:
            raise StepFailed(f"snapshot not finished ({', '.join(bad)})")
        enabled = pl.pipe_capture_enabled(pipe)
        off = [t for t, on in enabled.items() if not on]
        if off:
            raise StepFailed(f"capture is not enabled on {', '.join(off)}")
        replicas.check(ctx)

    def rollback(self, ctx: Ctx) -> None:
        replicas.stop(ctx)
        pipe = ctx.root.forward(ctx.s.name)
        stop_sink_for_rollback(ctx, pipe)
        pl.disable_pipe_capture(ctx.m, pipe, drop=False)
        update_monolith_capture_wish(ctx)
        stop_pg_capture(ctx, pipe)
        clear_target(pipe)
        ctx.say(
            f"capture: triggers removed from {', '.join(ctx.s.tables)}; {ctx.s.name} tables "
            "emptied for a fresh snapshot"
        )


class VerifyStep(Step):
    name = "verify"

    def action(self, ctx: Ctx) -> None:
        from cdc.verify import verify

        pipe = ctx.root.forward(ctx.s.name)
        rep = ctx.root.replica(ctx.s.name)
        # owned tables and replicas alike: both are fed monolith -> service until `writes`
        mapping = pipe.mapping if rep is None else pl.merge_mappings(pipe.mapping, rep.mapping)
        attempts = ctx.m.guards.verify_attempts
        report = None
        for attempt in range(1, attempts + 1):
            drain(ctx, pipe)
            if rep is not None:
                drain(ctx, rep)
            source, target = pl.make_engine(pipe.source_url), pl.make_engine(pipe.target_url)
            try:
                report = verify(source, target, mapping)
            finally:
                source.dispose()
                target.dispose()
            if report.ok:
                break
            ctx.say(
                f"verify: attempt {attempt}/{attempts}: {report.differences} difference(s) "
                "(changes in flight?); draining and comparing again"
            )
            time.sleep(0.5)
        assert report is not None
        ctx.evidence["tables"] = {
            t.source: {
                "source_rows": t.source_rows,
                "target_rows": t.target_rows,
                "missing": t.missing_count,
                "extra": t.extra_count,
                "differing": t.differing_count,
            }
            for t in report.tables
        }
        ctx.evidence["differences"] = report.differences
        ctx.evidence["lag"] = [
            x.__dict__
            for p in (pipe, rep)
            if p is not None
            for x in pl.pipeline_lag(p, ctx.root.transport())
        ]
        rows = ", ".join(f"{t.source} {t.source_rows}={t.target_rows}" for t in report.tables)
        ctx.say(f"verify: {report.differences} difference(s) ({rows})")

    def check(self, ctx: Ctx) -> None:
        if ctx.evidence.get("differences"):
            raise StepFailed(
                f"verifier found {ctx.evidence['differences']} difference(s): "
                f"{ctx.evidence['tables']}; way forward: `kit cdc dlq list`, fix, then re-run "
                f"`kit step {ctx.s.name} verify`"
            )
        lag = [
            x
            for x in ctx.evidence.get("lag", [])
            if (x.get("seconds") or 0) > ctx.m.guards.cdc_max_lag_seconds
        ]
        if lag:
            raise StepFailed(f"cdc lag over threshold: {lag}")

    def rollback(self, ctx: Ctx) -> None:
        ctx.say("verify: nothing to undo")
