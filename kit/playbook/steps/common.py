"""Helpers several steps share: readiness, guard dry runs, parity gate, route flips, drains."""

from __future__ import annotations

import time
from typing import Any

import httpx

from kit.manifest import Endpoint
from kit.playbook import pipelines as pl
from kit.playbook.framework import Ctx, StepFailed
from kit.playbook.guards import RouteIntent, parity_rate
from kit.playbook.state import RUNNING

ROUTE_ACK_TIMEOUT_S = 10.0  # a proxy silent for 3 s stops counting as live well before


def ready_refusals(ctx: Ctx) -> list[str]:
    url = ctx.s.url.rstrip("/") + ctx.s.traffic_ready
    try:
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            r = client.get(url)
    except httpx.HTTPError as exc:
        return [
            f"service {ctx.s.name!r} is not ready: {url} unreachable ({exc.__class__.__name__}); "
            f"way forward: start it (`kit up`) or force"
        ]
    if r.status_code != 200:
        return [f"service {ctx.s.name!r} is not ready: {url} answered {r.status_code}"]
    return []


def route_refusals(ctx: Ctx, endpoints: tuple[Endpoint, ...], mode: str, step: str) -> list[str]:
    """The route guards' verdict on this step's own route changes, as if it were running."""
    from dataclasses import replace

    gctx = ctx.root.guard_context()
    as_running = replace(ctx.state, step=step, status=RUNNING)
    out: list[str] = []
    modes = ctx.root.route_modes()
    for e in endpoints:
        old = modes.get((e.method, e.path), "monolith")
        if old == mode:
            continue
        intent = RouteIntent(e, mode.split(":", 1)[0], old.split(":", 1)[0], ctx.s.name, mode, old)
        out += gctx.refusals(intent, as_running)
    return list(dict.fromkeys(out))


def parity_gate(ctx: Ctx) -> list[str]:
    """Strict gate of `canary`/`reads`: enough samples AND a low enough mismatch rate."""
    g = ctx.m.guards
    stats = ctx.root.stats()
    out = []
    for e in ctx.s.read_endpoints:
        samples, rate = parity_rate(stats.stats_for(e.label))
        if samples < g.parity_min_samples:
            out.append(
                f"parity: {e.label} has {samples} of {g.parity_min_samples} shadow samples; way "
                f"forward: send read traffic through the proxy while {ctx.s.name} is in shadow "
                "(or force)"
            )
        elif rate > g.parity_max_mismatch_rate:
            out.append(
                f"parity: {e.label} mismatches {rate:.1%} of {samples} samples (threshold "
                f"{g.parity_max_mismatch_rate:.1%}); way forward: `kit parity report`, fix the "
                f"service, re-run `kit step {ctx.s.name} shadow` (or force)"
            )
    return out


def parity_evidence(ctx: Ctx) -> dict[str, Any]:
    stats = ctx.root.stats()
    out = {}
    for e in ctx.s.read_endpoints:
        st = stats.stats_for(e.label)
        samples, rate = parity_rate(st)
        out[e.label] = {
            "samples": samples,
            "matches": st.matches,
            "noise": st.noise,
            "mismatches": st.mismatches,
            "errors": st.errors,
            "lagged": getattr(st, "lagged", 0),
            "mismatch_rate": round(rate, 4),
        }
    return out


def set_mode(
    ctx: Ctx,
    endpoints: tuple[Endpoint, ...],
    mode: str,
    why: str,
    fallback: bool | None = None,
    *,
    guarded: bool = True,
) -> None:
    """Move `endpoints` to `mode` as ONE route-table version, then wait until every live proxy
    serves it (no sleep: proxies report the version they serve in the route store).

    `guarded=False` when the step's preconditions already ran the route guards on this very
    change (guards are evaluated once per change set), or for the write-ownership move, which
    is the operation the ownership guard points to.
    """
    from strangler_proxy.routes import RouteError

    svc = ctx.s.name
    routes = ctx.root.routes()
    try:
        changes = [
            change
            for e in endpoints
            for change in routes.plan(
                e.method,
                e.path,
                mode,
                service=svc,
                reason=f"playbook {why}",
                actor=ctx.root.actor,
                force=ctx.force,
                fallback=fallback,
            )
        ]
        result = routes.commit(changes, guards=None if guarded else [])
    except RouteError as exc:
        raise StepFailed(f"routes of {svc} -> {mode} refused: {exc}") from None
    served = routes.store.wait_served(result.version, timeout=ROUTE_ACK_TIMEOUT_S)
    ctx.evidence.setdefault("route_versions", []).append(
        {"version": result.version, "mode": mode, "proxies": served.live,
         "seconds": round(served.seconds, 3)}
    )  # fmt: skip
    ctx.say(
        f"routes: {len(endpoints)} endpoint(s) of {svc} -> {mode} (route version "
        f"{result.version}, served by {served.serving}/{served.live} live proxies after "
        f"{served.seconds:.2f}s)"
    )
    if not served.complete:
        raise StepFailed(
            f"{served.live - served.serving} live prox(ies) still serve an older route table "
            f"after {ROUTE_ACK_TIMEOUT_S:.0f}s; way forward: check the proxies (`kit status`), "
            "then re-run the step"
        )


def check_modes(ctx: Ctx, endpoints: tuple[Endpoint, ...], mode: str) -> None:
    modes = ctx.root.route_modes()
    wrong = [
        f"{e.label} is {modes.get((e.method, e.path))}"
        for e in endpoints
        if modes.get((e.method, e.path)) != mode
    ]
    if wrong:
        raise StepFailed(f"routes are not {mode}: {', '.join(wrong)}")


def drain(ctx: Ctx, pipe: pl.Pipeline, *, final: bool = False) -> dict[str, Any]:
    """`final`: the pipeline's capture stops next (see `pl.drain`)."""
    try:
        return pl.drain(
            ctx.m,
            pipe,
            timeout_s=ctx.m.guards.drain_timeout_seconds,
            progress=ctx.say,
            transport=ctx.root.transport(),
            final=final,
        )
    except pl.PipelineError as exc:
        raise StepFailed(str(exc)) from None


def await_workers(ctx: Ctx, pipe: pl.Pipeline, timeout_s: float = 10.0) -> bool:
    """Wait until the `kit up` watchdog runs `pipe`'s workers (wanted just before). Without a
    watchdog (no `kit up`) the drains run them in-process; the narration says so."""
    from kit.runtime.procs import RunDir

    names = (pipe.capture_worker, pipe.sink_worker)
    var = ctx.m.kit.var_dir
    if RunDir(var / "run", var / "log").running("watchdog") is None:
        ctx.say(f"no `kit up` watchdog runs; drains run {', '.join(names)} in-process")
        return False
    deadline = time.monotonic() + timeout_s
    for name in names:
        if not pl.wait_worker_running(ctx.m, name, max(0.0, deadline - time.monotonic())):
            ctx.say(
                f"warning: no process runs {name} after {timeout_s:.0f}s (is `kit up` "
                "running?); drains run it in-process, between them changes wait for it"
            )
            return False
    ctx.say(f"{pipe.direction} CDC of {pipe.service}: {', '.join(names)} running")
    return True


def lag_refusals(ctx: Ctx, pipe: pl.Pipeline) -> list[str]:
    g = ctx.m.guards
    lags = pl.pipeline_lag(pipe, ctx.root.transport())
    bad = [
        x
        for x in lags
        if (x.events or 0) > 0 and (x.seconds is None or x.seconds > g.cdc_max_lag_seconds)
    ]
    if not bad:
        return []
    detail = ", ".join(f"{x.table}: {x.events} event(s)" for x in bad)
    return [
        f"cdc lag: {pipe.direction} CDC of {ctx.s.name} is behind ({detail}); way forward: "
        "wait for the workers (`kit status`) or force"
    ]


def update_monolith_capture_wish(ctx: Ctx) -> None:
    """capture:monolith runs while any service's tables are captured on the monolith
    (PostgreSQL: each service's forward capture runs while its tables are published)."""
    fwd = ctx.root.forward(ctx.s.name)
    if fwd.pg_source:
        wanted = any(pl.pipe_capture_enabled(fwd).values())
        ctx.root.state.want_worker(fwd.capture_worker, wanted, f"forward capture of {ctx.s.name}")
        return
    tables = [t for s in ctx.m.services.values() for t in (*s.tables, *s.replicas)]
    enabled = pl.capture_enabled(ctx.m.monolith.database_url, tables)
    wanted = any(enabled.values())
    ctx.root.state.want_worker(pl.MONOLITH_CAPTURE, wanted, "forward capture of the monolith")


def stop_pg_capture(ctx: Ctx, pipe: pl.Pipeline) -> None:
    """PostgreSQL: once the pipeline's capture worker is unwanted, wait for it and drop the
    slot (a slot nobody reads keeps WAL forever)."""
    if not pipe.pg_source:
        return
    ctx.root.state.want_worker(pipe.capture_worker, False, f"{pipe.direction} CDC stopped")
    if not pl.wait_worker_stopped(ctx.m, pipe.capture_worker, 15.0):
        ctx.say(f"warning: {pipe.capture_worker} still running; dropping its slot anyway")
    if pl.drop_pipe_slot(ctx.m, pipe):
        ctx.say(f"replication slot {pipe.slot} dropped")


def count_rows(url: str, tables: list[str]) -> dict[str, int]:
    from sqlalchemy import text

    engine = pl.make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar() or 0)
                for t in tables
            }
    finally:
        engine.dispose()


def clear_target(pipe: pl.Pipeline) -> None:
    """Empty the target tables and forget the sink's offsets/dead letters of this pipeline."""
    from sqlalchemy import MetaData, delete

    from cdc.sink import dead_letters, ensure_sink_tables, sink_offsets

    engine = pl.make_engine(pipe.target_url)
    try:
        ensure_sink_tables(engine)
        md = MetaData()
        md.reflect(engine, only=pipe.target_tables)
        with engine.begin() as conn:
            for t in reversed(md.sorted_tables):
                conn.execute(delete(t))
            conn.execute(delete(sink_offsets).where(sink_offsets.c.group == pipe.group))
            conn.execute(delete(dead_letters).where(dead_letters.c.group == pipe.group))
    finally:
        engine.dispose()


def start_capture(ctx: Ctx, pipe: pl.Pipeline, what: str) -> None:
    """Capture `pipe`'s source tables afresh (or resume): a PostgreSQL slot left by an earlier,
    rolled back or abandoned attempt is dropped first; on SQLite the triggers go in and a
    snapshot is requested (resumed when the step continues). `what` names the tables in
    refusals. The capture step and the replicas share this."""
    from cdc.capture.sqlite import CaptureError, request_snapshot

    if pipe.pg_source and not ctx.continuing and pl.pg_slot_state(pipe, peek=False).exists:
        ctx.root.state.want_worker(pipe.capture_worker, False, f"{pipe.direction} restarted")
        pl.wait_worker_stopped(ctx.m, pipe.capture_worker, 15.0)
        pl.drop_pipe_slot(ctx.m, pipe)
    try:
        pl.enable_pipe_capture(ctx.m, pipe)
    except Exception as exc:  # noqa: BLE001 - CaptureError or DB errors, reported as such
        raise StepFailed(f"cannot enable capture on {what}: {exc}") from None
    if pipe.pg_source:
        return
    source = pl.make_engine(pipe.source_url)
    try:
        request_snapshot(source, pipe.source_tables, restart=not ctx.continuing)
    except CaptureError as exc:
        raise StepFailed(str(exc)) from None
    finally:
        source.dispose()


def stop_sink_for_rollback(ctx: Ctx, pipe: pl.Pipeline) -> None:
    """Unwant `pipe`'s sink and wait until no process runs it: a rollback that empties the
    target must not race a sink still applying into it."""
    ctx.root.state.want_worker(pipe.sink_worker, False, "capture rolled back")
    if not pl.wait_worker_stopped(ctx.m, pipe.sink_worker, 15.0):
        raise StepFailed(
            f"worker {pipe.sink_worker} is still running; stop it (kit up stops unwanted "
            "workers within a second) and retry `kit rollback`"
        )


def hold_writes(ctx: Ctx) -> None:
    """Hold the service's write routes at the proxy (one acknowledged route version): their
    requests wait, forwarded nowhere, until the next version releases them to the new owner."""
    set_mode(ctx, ctx.s.write_endpoints, "held", "write cut-over (hold)", guarded=False)
    ctx.say(f"hold: write endpoints of {ctx.s.name} held at the proxy while CDC catches up")
