"""`retire`: every endpoint pinned to the service, reverse CDC stopped, contract written."""

from __future__ import annotations

from kit.playbook import pipelines as pl
from kit.playbook.framework import Ctx, Step, StepFailed
from kit.playbook.steps.common import (
    check_modes,
    drain,
    hold_writes,
    lag_refusals,
    ready_refusals,
    set_mode,
    stop_pg_capture,
)


def replicas_of_owned(ctx: Ctx) -> list[str]:
    """`<holder> keeps a replica of <table>` for the service's tables other services replicate:
    their copies follow the monolith's, which only reverse CDC keeps current after `writes`."""
    return [
        f"{holder} keeps a replica of {table}"
        for table in ctx.s.tables
        for holder in ctx.m.replica_holders(table)
    ]


class RetireStep(Step):
    name = "retire"

    def preconditions(self, ctx: Ctx) -> list[str]:
        return ready_refusals(ctx) + lag_refusals(ctx, ctx.root.reverse(ctx.s.name))

    def action(self, ctx: Ctx) -> None:
        from kit.playbook.contract import write_contract

        rev = ctx.root.reverse(ctx.s.name)
        set_mode(ctx, ctx.s.endpoints, "extracted", "retire (pinned)", fallback=False)
        ctx.say(f"retire: every endpoint of {ctx.s.name} pinned to the service (no fallback)")
        held = replicas_of_owned(ctx)
        if ctx.s.stop_reverse_cdc_on_retire and held:
            ctx.evidence["reverse_cdc"] = "kept (replicas of its tables are fed through it)"
            ctx.say(
                "retire: reverse CDC kept running although stop_reverse_cdc_on_retire = true: "
                f"{'; '.join(held)} (the monolith's copy feeds the replica)"
            )
        elif ctx.s.stop_reverse_cdc_on_retire:
            drain(ctx, rev)
            ctx.root.state.want_worker(rev.capture_worker, False, "retired")
            ctx.root.state.want_worker(rev.sink_worker, False, "retired")
            pl.disable_pipe_capture(ctx.m, rev, drop=False)
            stop_pg_capture(ctx, rev)
            ctx.evidence["reverse_cdc"] = "stopped"
            ctx.say("retire: reverse CDC stopped")
        else:
            ctx.evidence["reverse_cdc"] = "kept (monolith modules still read these tables)"
            ctx.say("retire: reverse CDC kept running (stop_reverse_cdc_on_retire = false)")
        path = write_contract(ctx.m, ctx.s.name)
        ctx.evidence["contract_revision"] = str(path)
        ctx.say(f"retire: contract revision written to {path} (NOT applied; see its docstring)")

    def check(self, ctx: Ctx) -> None:
        from kit.playbook.contract import contract_path

        check_modes(ctx, ctx.s.endpoints, "extracted")
        if not contract_path(ctx.m, ctx.s.name).exists():
            raise StepFailed("contract revision file is missing")

    def rollback(self, ctx: Ctx) -> None:
        from cdc.capture.sqlite import request_snapshot
        from kit.playbook.contract import contract_path

        rev = ctx.root.reverse(ctx.s.name)
        set_mode(ctx, ctx.s.read_endpoints, "extracted", "rollback retire", fallback=True)
        restarted = not all(pl.pipe_capture_enabled(rev).values())
        if restarted:
            # PostgreSQL: a new slot whose worker snapshots the service tables first
            pl.enable_pipe_capture(ctx.m, rev, snapshot="initial" if rev.pg_source else None)
            engine = pl.make_engine(rev.source_url)
            try:
                if engine.dialect.name == "sqlite":
                    request_snapshot(engine, rev.source_tables, restart=True)
            finally:
                engine.dispose()
            ctx.say("retire: reverse CDC restarted with a snapshot to resynchronise the monolith")
        ctx.root.state.want_worker(rev.capture_worker, True, f"reverse capture of {ctx.s.name}")
        ctx.root.state.want_worker(rev.sink_worker, True, f"reverse sink of {ctx.s.name}")
        drain(ctx, rev)
        if restarted:
            # a snapshot re-sends the rows, not the deletes made while reverse CDC was off:
            # with the writes held (nothing changes on either side), the monolith's rows the
            # service no longer has are deleted, then the writes go back to the service
            hold_writes(ctx)
            drain(ctx, rev, final=True)
            removed = pl.remove_deleted_rows(rev)
            ctx.evidence["deleted_while_retired"] = removed
            set_mode(
                ctx, ctx.s.write_endpoints, "extracted", "rollback retire (release)",
                fallback=False, guarded=False,
            )  # fmt: skip
            ctx.say(
                "retire: rows deleted in the service while reverse CDC was off, deleted from "
                "the monolith: "
                + (", ".join(f"{t} {r['deleted']}" for t, r in removed.items()) or "none")
            )
            for table, r in removed.items():
                for refusal in r["refused"]:
                    ctx.say(f"retire: warning: {table} kept a row the service deleted: {refusal}")
        contract_path(ctx.m, ctx.s.name).unlink(missing_ok=True)
        ctx.say("retire: contract revision removed; fallback to the monolith restored for reads")
