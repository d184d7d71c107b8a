"""`writes`: write ownership moves to the service (and back on rollback).

This is the one operation that moves a service's writes (kit.playbook.ownership): drain the
old owner's CDC, switch the capture direction, flip ALL write routes in one route-table
version that every live proxy acknowledges. On the way back, forward CDC runs and has caught
up BEFORE any route moves, so reads the service keeps serving are never left without it.
"""

from __future__ import annotations

from kit.playbook import pipelines as pl
from kit.playbook.framework import Ctx, Step, StepFailed
from kit.playbook.steps.common import (
    await_workers,
    check_modes,
    drain,
    hold_writes,
    lag_refusals,
    ready_refusals,
    set_mode,
    stop_pg_capture,
    update_monolith_capture_wish,
)


class WritesStep(Step):
    name = "writes"

    def preconditions(self, ctx: Ctx) -> list[str]:
        out = ready_refusals(ctx)
        if ctx.state.write_owner != "service":
            out += lag_refusals(ctx, ctx.root.forward(ctx.s.name))
        try:
            ctx.root.reverse(ctx.s.name)
        except Exception as exc:  # noqa: BLE001 - a broken [reverse] mapping
            out.append(f"reverse mapping of {ctx.s.name} is unusable: {exc}")
        return out

    def action(self, ctx: Ctx) -> None:
        from cdc.sink import Sink, SinkConfig, SinkError

        fwd, rev = ctx.root.forward(ctx.s.name), ctx.root.reverse(ctx.s.name)
        # 1. reverse capture first (origin-tagged: the forward sink's writes are not captured)
        try:
            pl.enable_pipe_capture(ctx.m, rev)
            probe = Sink(
                pl.make_engine(rev.target_url),
                rev.mapping,
                ctx.root.transport(),
                SinkConfig(rev.group, tuple(rev.topics.values())),
            )
            probe.engine.dispose()
        except (SinkError, Exception) as exc:  # noqa: BLE001
            raise StepFailed(f"reverse CDC cannot start: {exc}") from None
        ctx.root.state.want_worker(rev.capture_worker, True, f"reverse capture of {ctx.s.name}")
        ctx.root.state.want_worker(rev.sink_worker, True, f"reverse sink of {ctx.s.name}")
        ctx.say(
            f"writes: reverse CDC on {', '.join(rev.source_tables)} -> monolith "
            f"({', '.join(rev.topics.values())})"
        )
        # 2. forward CDC caught up; then the write routes are HELD (the proxy keeps their
        # requests waiting, one acknowledged route version) and every monolith write, those in
        # flight at the hold included, reaches the service: from here on neither side takes a
        # write, so no id the monolith handed out can still be on its way when the service
        # hands out its own (SQLite's next id is max(id) + 1, PostgreSQL's sequence is moved
        # past them below)
        if ctx.state.write_owner != "service":
            ctx.evidence["forward_drain"] = drain(ctx, fwd)
            hold_writes(ctx)
            ctx.evidence["forward_final_drain"] = drain(ctx, fwd, final=True)
        ctx.root.state.set(ctx.s.name, write_owner="service")
        ctx.say(f"writes: {ctx.s.name} now owns {', '.join(ctx.s.tables)}")
        ctx.fault_point(self.name)
        # 3. the service's id sequences past every id the monolith handed out (PostgreSQL:
        # CDC inserts explicit ids), then write endpoints to the service (no fallback: a
        # write must not land in the monolith): the held requests are released to it
        ids = pl.sync_sequences(fwd)
        if ids:
            ctx.evidence["next_ids"] = ids
            ctx.say(
                "writes: id sequences of "
                + ", ".join(f"{t} -> {n}" for t, n in ids.items())
                + " (past the monolith's, with headroom for in-flight creates)"
            )
        set_mode(ctx, ctx.s.write_endpoints, "extracted", "writes", fallback=False, guarded=False)
        # 4. forward CDC stops: the final drain under the hold brought the service everything
        # the monolith took, and since the hold no write reached the monolith (a step resumed
        # after ownership moved resumes after that drain too)
        ctx.root.state.want_worker(fwd.sink_worker, False, "write ownership moved to the service")
        if not pl.wait_worker_stopped(ctx.m, fwd.sink_worker, 15.0):
            ctx.say(f"writes: warning: {fwd.sink_worker} still running")
        pl.disable_pipe_capture(ctx.m, fwd, drop=False)
        update_monolith_capture_wish(ctx)
        stop_pg_capture(ctx, fwd)
        ctx.say("writes: forward CDC stopped for these tables")
        ctx.evidence["reverse_drain"] = drain(ctx, rev)
        ctx.evidence["reverse_topics"] = list(rev.topics.values())
        ctx.evidence["write_endpoints"] = [e.label for e in ctx.s.write_endpoints]

    def check(self, ctx: Ctx) -> None:
        check_modes(ctx, ctx.s.write_endpoints, "extracted")
        if ctx.root.state.get(ctx.s.name).write_owner != "service":
            raise StepFailed("write ownership did not move to the service")
        rev = ctx.root.reverse(ctx.s.name)
        off = [t for t, on in pl.pipe_capture_enabled(rev).items() if not on]
        if off:
            raise StepFailed(f"reverse capture is not enabled on {', '.join(off)}")

    def rollback(self, ctx: Ctx) -> None:
        fwd, rev = ctx.root.forward(ctx.s.name), ctx.root.reverse(ctx.s.name)
        # 1. forward CDC back, running and caught up BEFORE any route moves: reads stay on
        # the service, so from the flip on it must receive the monolith's writes (on
        # PostgreSQL a new slot without snapshot: the monolith got every change by reverse CDC)
        pl.enable_pipe_capture(ctx.m, fwd, snapshot="never" if fwd.pg_source else None)
        ctx.root.state.want_worker(fwd.capture_worker, True, f"forward capture of {ctx.s.name}")
        ctx.root.state.want_worker(fwd.sink_worker, True, f"forward sink of {ctx.s.name}")
        await_workers(ctx, fwd)
        ctx.evidence["forward_drain"] = drain(ctx, fwd)
        # 2. reverse CDC caught up, the write routes held, the service's last writes (those
        # in flight at the hold included) in the monolith, whose ids continue past them
        reverse_on = any(pl.pipe_capture_enabled(rev).values())
        if reverse_on:
            drain(ctx, rev)
        hold_writes(ctx)
        if reverse_on:
            ctx.evidence["reverse_final_drain"] = drain(ctx, rev, final=True)
        pl.sync_sequences(rev)
        # 3. ownership and every write route back in one route version, acknowledged: the
        # held requests are released to the monolith
        ctx.root.state.set(ctx.s.name, write_owner="monolith")
        set_mode(ctx, ctx.s.write_endpoints, "monolith", "rollback writes", guarded=False)
        # 4. reverse CDC stops (nothing reached the service since the hold)
        ctx.root.state.want_worker(rev.capture_worker, False, "writes rolled back")
        ctx.root.state.want_worker(rev.sink_worker, False, "writes rolled back")
        pl.disable_pipe_capture(ctx.m, rev, drop=False)
        stop_pg_capture(ctx, rev)
        drain(ctx, fwd)
        ctx.say(f"writes: monolith owns {', '.join(ctx.s.tables)} again; reverse CDC stopped")
