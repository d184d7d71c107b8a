"""The playbook engine: ordered, guarded, durable, idempotent migration steps per service.

Each step has preconditions (refusals name the reason and the way forward; `force` overrides
and is audited), an idempotent action, a check and a rollback. The service's position and
every run live in the state database (kit.playbook.state), so a crash mid-step is visible in
`kit status` and `kit step`/`kit rollback` continue from it. Docs: docs/playbook.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kit.manifest import Endpoint, Manifest, ServiceSpec
from kit.playbook import pipelines as pl
from kit.playbook.guards import GuardContext, RouteIntent, parity_rate, route_guard
from kit.playbook.state import (
    DONE,
    FAILED,
    PENDING,
    ROLLING_BACK,
    RUNNING,
    STEPS,
    ServiceState,
    StateStore,
    StepBusy,
)

Progress = Callable[[str], None]
FAULT_ENV = "KIT_FAULT_PAUSE"  # "<step>:<seconds>": pause mid-action (crash-safety tests)
PROXY_RELOAD_S = 1.2  # proxies pick up route changes within one second


class StepRefused(ValueError):
    """A precondition or guard refused; nothing was changed. The text says why and what next."""

    def __init__(self, reason: str, way_forward: str = "") -> None:
        self.reason = reason
        self.way_forward = way_forward
        super().__init__(f"{reason}" + (f"\n  way forward: {way_forward}" if way_forward else ""))


class StepFailed(RuntimeError):
    """A step's action or check failed; the step is marked failed and can be re-run."""


@dataclass
class StepResult:
    service: str
    step: str
    action: str  # run | rollback
    status: str  # done | failed
    narration: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    forced: bool = False
    duration_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == DONE

    def __str__(self) -> str:
        verb = "rolled back" if self.action == "rollback" else "ran"
        head = f"{self.service}: {verb} {self.step} -> {self.status} in {self.duration_s:.1f}s"
        if self.forced:
            head += " (forced)"
        return head + (f": {self.error}" if self.error else "")


@dataclass(frozen=True)
class PlanRow:
    step: str
    status: str
    started_at: Any = None
    finished_at: Any = None
    detail: str = ""


def _error_text(exc: BaseException) -> str:
    """A step's failure as recorded: a StepFailed says it all, others name their type."""
    return str(exc) if isinstance(exc, StepFailed) else f"{exc.__class__.__name__}: {exc}"


class Ctx:
    """What a step sees: the manifest, its service, the playbook, and a narration channel."""

    def __init__(
        self,
        pb: Playbook,
        service: ServiceSpec,
        state: ServiceState,
        *,
        force: bool,
        continuing: bool,
        progress: Progress | None,
        run_id: int = 0,
    ) -> None:
        self.pb = pb
        self.m = pb.m
        self.s = service
        self.state = state
        self.force = force
        self.continuing = continuing
        self.progress = progress
        self.run_id = run_id
        self.narration: list[str] = []
        self.evidence: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        self.narration.append(line)
        if self.progress:
            self.progress(line)
        if self.run_id:
            self.pb.state.save_evidence(self.run_id, self.recorded_evidence())

    def recorded_evidence(self) -> dict[str, Any]:
        """The evidence as the state keeps it: with the narration so far."""
        return {**self.evidence, "_narration": self.narration}

    def finish(
        self,
        history_status: str,
        step: str | None,
        status: str,
        error: str | None = None,
        **extra: Any,
    ) -> None:
        """Close this run's history row (with the evidence) and move the service to `step`."""
        self.pb.state.finish(
            self.run_id,
            self.s.name,
            history_status=history_status,
            step=step,
            status=status,
            evidence=self.recorded_evidence(),
            error=error,
            **extra,
        )

    def result(self, step: str, action: str, status: str, error: str | None = None) -> StepResult:
        """What `kit step` / `kit rollback` report: this run's narration, evidence and time."""
        return StepResult(
            self.s.name, step, action, status, self.narration, self.evidence, self.force,
            time.monotonic() - self.started, error,
        )  # fmt: skip

    def fault_point(self, step: str) -> None:
        spec = os.environ.get(FAULT_ENV, "")
        name, _, secs = spec.partition(":")
        if name == step and secs:
            self.say(f"(fault injection: pausing {secs}s inside {step})")
            time.sleep(float(secs))


class Step:
    """Base: a step's four parts. Subclasses override what they need."""

    name = ""

    def preconditions(self, ctx: Ctx) -> list[str]:
        return []

    def action(self, ctx: Ctx) -> None:
        raise NotImplementedError

    def check(self, ctx: Ctx) -> None:
        """Raise StepFailed when the action's effect is not there."""

    def rollback(self, ctx: Ctx) -> None:
        """Undo the action (idempotent)."""


# ---------------------------------------------------------------------------------------------
# helpers used by several steps


def _ready(ctx: Ctx) -> list[str]:
    """The service passes the manifest's `ready` check (HTTP path + status, or TCP)."""
    from kit.runtime.supervisor import readiness_problem

    check = ctx.s.ready
    problem = readiness_problem(ctx.s.ready_target, check.status if check.path else None)
    if problem is None:
        return []
    return [
        f"service {ctx.s.name!r} is not ready: {problem}; "
        "way forward: start it (`kit up`), fix it, or force"
    ]


def _route_refusals(ctx: Ctx, endpoints: tuple[Endpoint, ...], mode: str, step: str) -> list[str]:
    """The route guards' verdict on this step's own route changes, as if it were running."""
    from dataclasses import replace

    gctx = ctx.pb.guard_context()
    as_running = replace(ctx.state, step=step, status=RUNNING)
    out: list[str] = []
    modes = ctx.pb.route_modes()
    for e in endpoints:
        old = modes.get((e.method, e.path), "monolith")
        if old == mode:
            continue
        intent = RouteIntent(e, mode.split(":", 1)[0], old.split(":", 1)[0], ctx.s.name, mode, old)
        out += gctx.refusals(intent, as_running)
    return list(dict.fromkeys(out))


def _parity_gate(ctx: Ctx) -> list[str]:
    """Strict gate of `canary`/`reads`: enough samples AND a low enough mismatch rate."""
    g = ctx.m.guards
    stats = ctx.pb.stats()
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


def _parity_evidence(ctx: Ctx) -> dict[str, Any]:
    stats = ctx.pb.stats()
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
            "mismatch_rate": round(rate, 4),
        }
    return out


def _set_mode(
    ctx: Ctx, endpoints: tuple[Endpoint, ...], mode: str, why: str, fallback: bool | None = None
) -> None:
    from strangler_proxy.routes import RouteError

    svc = ctx.s.name
    for e in endpoints:
        try:
            ctx.pb.routes().set_route(
                e.method,
                e.path,
                mode,
                service=svc,
                reason=f"playbook {why}",
                actor=ctx.pb.actor,
                force=ctx.force,
                fallback=fallback,
            )
        except RouteError as exc:
            raise StepFailed(f"route {e.label} -> {mode} refused: {exc}") from None
    ctx.say(f"routes: {len(endpoints)} endpoint(s) of {svc} -> {mode}")


def _check_modes(ctx: Ctx, endpoints: tuple[Endpoint, ...], mode: str) -> None:
    modes = ctx.pb.route_modes()
    wrong = [
        f"{e.label} is {modes.get((e.method, e.path))}"
        for e in endpoints
        if modes.get((e.method, e.path)) != mode
    ]
    if wrong:
        raise StepFailed(f"routes are not {mode}: {', '.join(wrong)}")


def _drain(ctx: Ctx, pipe: pl.Pipeline) -> dict[str, Any]:
    try:
        return pl.drain(
            ctx.m,
            pipe,
            timeout_s=ctx.m.guards.drain_timeout_seconds,
            progress=ctx.say,
            transport=ctx.pb.transport(),
        )
    except pl.PipelineError as exc:
        raise StepFailed(str(exc)) from None


def _lag_refusals(ctx: Ctx, pipe: pl.Pipeline) -> list[str]:
    g = ctx.m.guards
    lags = pl.pipeline_lag(pipe, ctx.pb.transport())
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


def _update_monolith_capture_wish(ctx: Ctx) -> None:
    """capture:monolith runs while any service's tables are captured on the monolith
    (PostgreSQL: each service's forward capture runs while its tables are published)."""
    fwd = ctx.pb.forward(ctx.s.name)
    if fwd.pg_source:
        wanted = any(pl.pipe_capture_enabled(fwd).values())
        ctx.pb.state.want_worker(fwd.capture_worker, wanted, f"forward capture of {ctx.s.name}")
        return
    tables = [t for s in ctx.m.services.values() for t in s.tables]
    enabled = pl.capture_enabled(ctx.m.monolith.database_url, tables)
    wanted = any(enabled.values())
    ctx.pb.state.want_worker(pl.MONOLITH_CAPTURE, wanted, "forward capture of the monolith")


# ---------------------------------------------------------------------------------------------
# the eight steps


class SchemaStep(Step):
    name = "schema"

    def preconditions(self, ctx: Ctx) -> list[str]:
        if ctx.s.migrations is None:
            return [f"services.{ctx.s.name}.migrations names no Alembic environment"]
        return []

    def action(self, ctx: Ctx) -> None:
        from kit.appdb import app_database

        rev = app_database(ctx.m, ctx.s.name).upgrade()
        ctx.evidence["revision"] = rev
        ctx.say(f"schema: {ctx.s.name} database at Alembic revision {rev}")

    def check(self, ctx: Ctx) -> None:
        from kit.appdb import app_database

        if not app_database(ctx.m, ctx.s.name).at_head():
            raise StepFailed(f"{ctx.s.name} database is not at its Alembic head")

    def rollback(self, ctx: Ctx) -> None:
        from kit.appdb import app_database

        app_database(ctx.m, ctx.s.name).downgrade("base")
        ctx.say(f"schema: {ctx.s.name} database downgraded to base")


class CaptureStep(Step):
    name = "capture"

    def action(self, ctx: Ctx) -> None:
        from cdc.capture.sqlite import CaptureError, request_snapshot

        pipe = ctx.pb.forward(ctx.s.name)
        tables = list(ctx.s.tables)
        if pipe.pg_source and not ctx.continuing and pl.pg_slot_state(pipe, peek=False).exists:
            # a slot left by an earlier, rolled back or abandoned attempt: start afresh
            ctx.pb.state.want_worker(pipe.capture_worker, False, "capture restarted")
            pl.wait_worker_stopped(ctx.m, pipe.capture_worker, 15.0)
            pl.drop_pipe_slot(ctx.m, pipe)
        try:
            pl.enable_pipe_capture(ctx.m, pipe)
        except Exception as exc:  # noqa: BLE001 - CaptureError or DB errors, reported as such
            raise StepFailed(f"cannot enable capture on {', '.join(tables)}: {exc}") from None
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
            source = pl.make_engine(ctx.m.monolith.database_url)
            try:
                request_snapshot(source, tables, restart=not ctx.continuing)
            except CaptureError as exc:
                raise StepFailed(str(exc)) from None
            finally:
                source.dispose()
            ctx.say(
                "capture: snapshot "
                + ("resumed from its last finished chunk" if ctx.continuing else "requested")
            )
        ctx.pb.state.want_worker(pipe.capture_worker, True, f"forward capture of {ctx.s.name}")
        ctx.pb.state.want_worker(pipe.sink_worker, True, f"forward sink of {ctx.s.name}")
        ctx.fault_point(self.name)
        ctx.evidence["drain"] = _drain(ctx, pipe)
        ctx.evidence["snapshot"] = self._snapshot(ctx)
        ctx.evidence["target_rows"] = _count_rows(pipe.target_url, pipe.target_tables)
        rows = ", ".join(f"{t} {n}" for t, n in ctx.evidence["snapshot"].items())
        ctx.say(f"capture: snapshot done ({rows}); streaming into {ctx.s.name}")

    def _snapshot(self, ctx: Ctx) -> dict[str, int]:
        summary = pl.snapshot_summary(ctx.pb.forward(ctx.s.name))
        return {t: n for t, (_st, n) in summary.items() if t in ctx.s.tables}

    def check(self, ctx: Ctx) -> None:
        pipe = ctx.pb.forward(ctx.s.name)
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

    def rollback(self, ctx: Ctx) -> None:
        pipe = ctx.pb.forward(ctx.s.name)
        ctx.pb.state.want_worker(pipe.sink_worker, False, "capture rolled back")
        if not pl.wait_worker_stopped(ctx.m, pipe.sink_worker, 15.0):
            raise StepFailed(
                f"worker {pipe.sink_worker} is still running; stop it (kit up stops unwanted "
                "workers within a second) and retry `kit rollback`"
            )
        pl.disable_pipe_capture(ctx.m, pipe, drop=False)
        _update_monolith_capture_wish(ctx)
        _stop_pg_capture(ctx, pipe)
        _clear_target(pipe)
        ctx.say(
            f"capture: triggers removed from {', '.join(ctx.s.tables)}; {ctx.s.name} tables "
            "emptied for a fresh snapshot"
        )


def _stop_pg_capture(ctx: Ctx, pipe: pl.Pipeline) -> None:
    """PostgreSQL: once the pipeline's capture worker is unwanted, wait for it and drop the
    slot (a slot nobody reads keeps WAL forever)."""
    if not pipe.pg_source:
        return
    ctx.pb.state.want_worker(pipe.capture_worker, False, f"{pipe.direction} CDC stopped")
    if not pl.wait_worker_stopped(ctx.m, pipe.capture_worker, 15.0):
        ctx.say(f"warning: {pipe.capture_worker} still running; dropping its slot anyway")
    if pl.drop_pipe_slot(ctx.m, pipe):
        ctx.say(f"replication slot {pipe.slot} dropped")


def _count_rows(url: str, tables: list[str]) -> dict[str, int]:
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


def _clear_target(pipe: pl.Pipeline) -> None:
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


class VerifyStep(Step):
    name = "verify"

    def action(self, ctx: Ctx) -> None:
        from cdc.verify import verify

        pipe = ctx.pb.forward(ctx.s.name)
        attempts = ctx.m.guards.verify_attempts
        report = None
        for attempt in range(1, attempts + 1):
            _drain(ctx, pipe)
            source, target = pl.make_engine(pipe.source_url), pl.make_engine(pipe.target_url)
            try:
                report = verify(source, target, pipe.mapping)
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
        ctx.evidence["lag"] = [x.__dict__ for x in pl.pipeline_lag(pipe, ctx.pb.transport())]
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


class ShadowStep(Step):
    name = "shadow"

    def preconditions(self, ctx: Ctx) -> list[str]:
        return _ready(ctx) + _route_refusals(ctx, ctx.s.read_endpoints, "shadow", "shadow")

    def action(self, ctx: Ctx) -> None:
        if not ctx.continuing:
            stats = ctx.pb.stats()
            for e in ctx.s.read_endpoints:
                stats.reset(e.label)
            ctx.say("shadow: parity statistics of the read endpoints reset")
        _set_mode(ctx, ctx.s.read_endpoints, "shadow", "shadow")
        ctx.evidence["endpoints"] = [e.label for e in ctx.s.read_endpoints]

    def check(self, ctx: Ctx) -> None:
        _check_modes(ctx, ctx.s.read_endpoints, "shadow")

    def rollback(self, ctx: Ctx) -> None:
        _set_mode(ctx, ctx.s.read_endpoints, "monolith", "rollback shadow")


class CanaryStep(Step):
    name = "canary"

    def stage(self, ctx: Ctx) -> int:
        st = ctx.state
        if st.step == "canary" and st.status == DONE:
            return st.canary_stage + 1
        if st.step == "canary" and st.status in (RUNNING, FAILED):
            return max(st.canary_stage + 1, 0)
        return 0

    def preconditions(self, ctx: Ctx) -> list[str]:
        stages = ctx.m.guards.canary_stages
        stage = self.stage(ctx)
        if stage >= len(stages):
            return [
                f"canary is already at its last stage ({stages[-1]}%); way forward: "
                f"`kit advance {ctx.s.name}` moves on to reads"
            ]
        pct = stages[stage]
        return (
            _ready(ctx)
            + _parity_gate(ctx)
            + _route_refusals(ctx, ctx.s.read_endpoints, f"canary:{pct}", "canary")
        )

    def action(self, ctx: Ctx) -> None:
        stages = ctx.m.guards.canary_stages
        stage = min(self.stage(ctx), len(stages) - 1)
        pct = stages[stage]
        ctx.evidence["parity"] = _parity_evidence(ctx)
        _set_mode(ctx, ctx.s.read_endpoints, f"canary:{pct}", f"canary stage {stage + 1}")
        ctx.evidence["percent"] = pct
        ctx.evidence["stage"] = f"{stage + 1}/{len(stages)}"
        ctx.extra["canary_stage"] = stage
        ctx.say(f"canary: {pct}% of read traffic to {ctx.s.name} (stage {stage + 1}/{len(stages)})")

    def check(self, ctx: Ctx) -> None:
        _check_modes(ctx, ctx.s.read_endpoints, f"canary:{ctx.evidence['percent']}")

    def rollback(self, ctx: Ctx) -> None:
        _set_mode(ctx, ctx.s.read_endpoints, "shadow", "rollback canary")
        ctx.extra["canary_stage"] = -1


class ReadsStep(Step):
    name = "reads"

    def preconditions(self, ctx: Ctx) -> list[str]:
        out = []
        last = len(ctx.m.guards.canary_stages) - 1
        st = ctx.state
        if st.step == "canary" and st.canary_stage < last:
            pct = ctx.m.guards.canary_stages[max(st.canary_stage, 0)]
            out.append(
                f"canary is at {pct}%, not yet at its last stage "
                f"({ctx.m.guards.canary_stages[-1]}%); way forward: `kit advance {ctx.s.name}`"
            )
        return (
            out
            + _ready(ctx)
            + _parity_gate(ctx)
            + _route_refusals(ctx, ctx.s.read_endpoints, "extracted", "reads")
        )

    def action(self, ctx: Ctx) -> None:
        ctx.evidence["parity"] = _parity_evidence(ctx)
        _set_mode(ctx, ctx.s.read_endpoints, "extracted", "reads", fallback=True)

    def check(self, ctx: Ctx) -> None:
        _check_modes(ctx, ctx.s.read_endpoints, "extracted")

    def rollback(self, ctx: Ctx) -> None:
        stages = ctx.m.guards.canary_stages
        _set_mode(ctx, ctx.s.read_endpoints, f"canary:{stages[-1]}", "rollback reads")
        ctx.extra["canary_stage"] = len(stages) - 1


class WritesStep(Step):
    name = "writes"

    def preconditions(self, ctx: Ctx) -> list[str]:
        out = _ready(ctx)
        if ctx.state.write_owner != "service":
            out += _lag_refusals(ctx, ctx.pb.forward(ctx.s.name))
        try:
            ctx.pb.reverse(ctx.s.name)
        except Exception as exc:  # noqa: BLE001 - a broken [reverse] mapping
            out.append(f"reverse mapping of {ctx.s.name} is unusable: {exc}")
        return out

    def action(self, ctx: Ctx) -> None:
        from cdc.sink import Sink, SinkConfig, SinkError

        fwd, rev = ctx.pb.forward(ctx.s.name), ctx.pb.reverse(ctx.s.name)
        # 1. reverse capture first (origin-tagged: the forward sink's writes are not captured)
        try:
            pl.enable_pipe_capture(ctx.m, rev)
            probe = Sink(
                pl.make_engine(rev.target_url),
                rev.mapping,
                ctx.pb.transport(),
                SinkConfig(rev.group, tuple(rev.topics.values())),
            )
            probe.engine.dispose()
        except (SinkError, Exception) as exc:  # noqa: BLE001
            raise StepFailed(f"reverse CDC cannot start: {exc}") from None
        ctx.pb.state.want_worker(rev.capture_worker, True, f"reverse capture of {ctx.s.name}")
        ctx.pb.state.want_worker(rev.sink_worker, True, f"reverse sink of {ctx.s.name}")
        ctx.say(
            f"writes: reverse CDC on {', '.join(rev.source_tables)} -> monolith "
            f"({', '.join(rev.topics.values())})"
        )
        # 2. forward CDC caught up, then ownership moves to the service
        if ctx.state.write_owner != "service":
            ctx.evidence["forward_drain"] = _drain(ctx, fwd)
        ctx.pb.state.set(ctx.s.name, write_owner="service")
        ctx.say(f"writes: {ctx.s.name} now owns {', '.join(ctx.s.tables)}")
        ctx.fault_point(self.name)
        # 3. the service's id sequences past every id the monolith handed out (PostgreSQL:
        # CDC inserts explicit ids), then write endpoints to the service (no fallback: a
        # write must not land in the monolith)
        ids = pl.sync_sequences(fwd)
        if ids:
            ctx.evidence["next_ids"] = ids
            ctx.say(
                "writes: id sequences of "
                + ", ".join(f"{t} -> {n}" for t, n in ids.items())
                + " (past the monolith's, with headroom for in-flight creates)"
            )
        _set_mode(ctx, ctx.s.write_endpoints, "extracted", "writes", fallback=False)
        # 4. in-flight monolith writes reach the service, then forward CDC stops
        time.sleep(PROXY_RELOAD_S)
        _drain(ctx, fwd)
        ctx.pb.state.want_worker(fwd.sink_worker, False, "write ownership moved to the service")
        if not pl.wait_worker_stopped(ctx.m, fwd.sink_worker, 15.0):
            ctx.say(f"writes: warning: {fwd.sink_worker} still running")
        pl.disable_pipe_capture(ctx.m, fwd, drop=False)
        _update_monolith_capture_wish(ctx)
        _stop_pg_capture(ctx, fwd)
        ctx.say("writes: forward CDC stopped for these tables")
        ctx.evidence["reverse_drain"] = _drain(ctx, rev)
        ctx.evidence["reverse_topics"] = list(rev.topics.values())
        ctx.evidence["write_endpoints"] = [e.label for e in ctx.s.write_endpoints]

    def check(self, ctx: Ctx) -> None:
        _check_modes(ctx, ctx.s.write_endpoints, "extracted")
        if ctx.pb.state.get(ctx.s.name).write_owner != "service":
            raise StepFailed("write ownership did not move to the service")
        rev = ctx.pb.reverse(ctx.s.name)
        off = [t for t, on in pl.pipe_capture_enabled(rev).items() if not on]
        if off:
            raise StepFailed(f"reverse capture is not enabled on {', '.join(off)}")

    def rollback(self, ctx: Ctx) -> None:
        fwd, rev = ctx.pb.forward(ctx.s.name), ctx.pb.reverse(ctx.s.name)
        # forward capture back first, so no monolith write after the flip is missed (on
        # PostgreSQL a new slot without snapshot: the monolith got every change by reverse CDC)
        pl.enable_pipe_capture(ctx.m, fwd, snapshot="never" if fwd.pg_source else None)
        ctx.pb.state.want_worker(fwd.capture_worker, True, f"forward capture of {ctx.s.name}")
        ctx.pb.state.want_worker(fwd.sink_worker, True, f"forward sink of {ctx.s.name}")
        reverse_on = any(pl.pipe_capture_enabled(rev).values())
        if reverse_on:
            _drain(ctx, rev)
        pl.sync_sequences(rev)  # the monolith hands out ids past the service's again
        _set_mode(ctx, ctx.s.write_endpoints, "monolith", "rollback writes")
        time.sleep(PROXY_RELOAD_S)
        if reverse_on:
            _drain(ctx, rev)
        ctx.pb.state.set(ctx.s.name, write_owner="monolith")
        ctx.pb.state.want_worker(rev.capture_worker, False, "writes rolled back")
        ctx.pb.state.want_worker(rev.sink_worker, False, "writes rolled back")
        pl.disable_pipe_capture(ctx.m, rev, drop=False)
        _stop_pg_capture(ctx, rev)
        _drain(ctx, fwd)
        ctx.say(f"writes: monolith owns {', '.join(ctx.s.tables)} again; reverse CDC stopped")


class RetireStep(Step):
    name = "retire"

    def preconditions(self, ctx: Ctx) -> list[str]:
        return _ready(ctx) + _lag_refusals(ctx, ctx.pb.reverse(ctx.s.name))

    def action(self, ctx: Ctx) -> None:
        from kit.playbook.contract import write_contract

        rev = ctx.pb.reverse(ctx.s.name)
        _set_mode(ctx, ctx.s.read_endpoints, "extracted", "retire (pinned)", fallback=False)
        _set_mode(ctx, ctx.s.write_endpoints, "extracted", "retire (pinned)", fallback=False)
        ctx.say(f"retire: every endpoint of {ctx.s.name} pinned to the service (no fallback)")
        if ctx.s.stop_reverse_cdc_on_retire:
            _drain(ctx, rev)
            ctx.pb.state.want_worker(rev.capture_worker, False, "retired")
            ctx.pb.state.want_worker(rev.sink_worker, False, "retired")
            pl.disable_pipe_capture(ctx.m, rev, drop=False)
            _stop_pg_capture(ctx, rev)
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

        _check_modes(ctx, ctx.s.endpoints, "extracted")
        if not contract_path(ctx.m, ctx.s.name).exists():
            raise StepFailed("contract revision file is missing")

    def rollback(self, ctx: Ctx) -> None:
        from cdc.capture.sqlite import request_snapshot
        from kit.playbook.contract import contract_path

        rev = ctx.pb.reverse(ctx.s.name)
        _set_mode(ctx, ctx.s.read_endpoints, "extracted", "rollback retire", fallback=True)
        if not all(pl.pipe_capture_enabled(rev).values()):
            # PostgreSQL: a new slot whose worker snapshots the service tables first
            pl.enable_pipe_capture(ctx.m, rev, snapshot="initial" if rev.pg_source else None)
            engine = pl.make_engine(rev.source_url)
            try:
                if engine.dialect.name == "sqlite":
                    request_snapshot(engine, rev.source_tables, restart=True)
            finally:
                engine.dispose()
            ctx.say("retire: reverse CDC restarted with a snapshot to resynchronise the monolith")
        ctx.pb.state.want_worker(rev.capture_worker, True, f"reverse capture of {ctx.s.name}")
        ctx.pb.state.want_worker(rev.sink_worker, True, f"reverse sink of {ctx.s.name}")
        _drain(ctx, rev)
        contract_path(ctx.m, ctx.s.name).unlink(missing_ok=True)
        ctx.say("retire: contract revision removed; fallback to the monolith restored for reads")


STEP_CLASSES: dict[str, Step] = {
    s.name: s
    for s in (
        SchemaStep(),
        CaptureStep(),
        VerifyStep(),
        ShadowStep(),
        CanaryStep(),
        ReadsStep(),
        WritesStep(),
        RetireStep(),
    )
}


# ---------------------------------------------------------------------------------------------
# the playbook


class Playbook:
    """Runs, rolls back and reports the steps of every service in the manifest."""

    def __init__(self, m: Manifest, *, actor: str | None = None, stats: Any = None) -> None:
        self.m = m
        self.actor = actor or os.environ.get("USER") or "kit"
        self.state = StateStore(m.kit.state_url)
        self._stats = stats
        self._transport: Any = None
        self._routes: Any = None
        self._pipes: dict[tuple[str, str], pl.Pipeline] = {}

    # -- adapters (built lazily, once)
    def stats(self) -> Any:
        if self._stats is None:
            from parity.recording import open_stats_store

            self._stats = open_stats_store(self.m.parity.stats_url)
        return self._stats

    def transport(self) -> Any:
        if self._transport is None:
            self._transport = pl.make_transport(self.m)
        return self._transport

    def forward(self, service: str) -> pl.Pipeline:
        key = ("forward", service)
        if key not in self._pipes:
            self._pipes[key] = pl.forward_pipeline(self.m, service)
        return self._pipes[key]

    def reverse(self, service: str) -> pl.Pipeline:
        key = ("reverse", service)
        if key not in self._pipes:
            self._pipes[key] = pl.reverse_pipeline(self.m, service)
        return self._pipes[key]

    def lag(self, service: str, direction: str) -> list[pl.Lag]:
        pipe = self.forward(service) if direction == "forward" else self.reverse(service)
        return pl.pipeline_lag(pipe, self.transport())

    def guard_context(self) -> GuardContext:
        return GuardContext(self.m, self.state, self.stats(), self.lag)

    def routes(self) -> Any:
        """RouteService on the shared route store, with the same guards as the proxy."""
        if self._routes is None:
            from kit.manifest import proxy_config
            from strangler_proxy.service import RouteService, readiness_guard
            from strangler_proxy.store import RouteStore

            cfg = proxy_config(self.m)
            store = RouteStore.from_url(self.m.proxy.store_url)
            store.sync_services(cfg.upstreams)
            store.declare(cfg.routes)
            self._routes = RouteService(
                store, [readiness_guard(store.services), route_guard(self.guard_context())]
            )
        return self._routes

    def route_modes(self) -> dict[tuple[str, str], str]:
        _, routes = self.routes().store.load()
        return {r.key: str(r.mode) for r in routes}

    def close(self) -> None:
        if self._routes is not None:
            self._routes.store.close()
        if self._stats is not None and hasattr(self._stats, "close"):
            self._stats.close()
        self.state.close()

    # -- reading
    def status(self) -> Any:
        """Every service's step, every endpoint's mode, CDC lag, parity (kit.playbook.status)."""
        from kit.playbook.status import collect_status

        return collect_status(self)

    def plan(self, service: str) -> list[PlanRow]:
        s = self.m.service(service)
        st = self.state.get(s.name)
        rows = []
        for i, step in enumerate(STEPS):
            last = self.state.last_run(s.name, step)
            if i < st.index or (i == st.index and st.status == DONE):
                status = DONE
            elif i == st.index:
                status = st.status
            else:
                status = PENDING
            detail = ""
            if i == st.index and st.interrupted:
                detail = f"interrupted (process {st.pid} is gone)"
            elif step == "canary" and status == DONE and st.step == "canary":
                detail = f"at {self.m.guards.canary_stages[max(st.canary_stage, 0)]}%"
            elif last and last.error and status == FAILED:
                detail = last.error[:200]
            rows.append(
                PlanRow(
                    step,
                    status,
                    last.started_at if last and status != PENDING else None,
                    last.finished_at if last and status != PENDING else None,
                    detail,
                )
            )
        return rows

    def explain(self, service: str) -> str:
        """One sentence: where the service stands and what to do next."""
        st = self.state.get(service)
        if st.step is None:
            return f"not started; next: `kit advance {service}` (schema)"
        if st.interrupted:
            verb = "rollback of" if st.status == ROLLING_BACK else "step"
            cont = "kit rollback" if st.status == ROLLING_BACK else f"kit step {service} {st.step}"
            return (
                f"{verb} {st.step!r} was interrupted (process {st.pid} is gone); continue with "
                f"`{cont}` or undo with `kit rollback {service}`"
            )
        if st.busy:
            return f"{st.step!r} is {st.status} in process {st.pid}"
        if st.status == FAILED:
            last = self.state.last_run(service, st.step)
            why = f": {last.error}" if last and last.error else ""
            return (
                f"step {st.step!r} failed{why}; re-run `kit step {service} {st.step}` or "
                f"`kit rollback {service}`"
            )
        if st.step == "canary" and st.canary_stage < len(self.m.guards.canary_stages) - 1:
            pct = self.m.guards.canary_stages[max(st.canary_stage, 0)]
            return f"canary at {pct}%; next: `kit advance {service}` raises the share"
        nxt = STEPS[st.index + 1] if st.index + 1 < len(STEPS) else None
        return f"{st.step} done; " + (f"next: {nxt}" if nxt else "migration complete")

    # -- running
    def next_step(self, service: str) -> str:
        st = self.state.get(service)
        if st.busy:
            if st.status == ROLLING_BACK:
                raise StepRefused(
                    f"{service}: the rollback of {st.step!r} is unfinished",
                    f"`kit rollback {service}` completes it",
                )
            return st.step or STEPS[0]
        if st.status == FAILED and st.step:
            return st.step
        if st.step == "canary" and st.canary_stage < len(self.m.guards.canary_stages) - 1:
            return "canary"
        if st.index + 1 >= len(STEPS):
            raise StepRefused(f"{service} is retired: nothing left to do")
        return STEPS[st.index + 1]

    def advance(
        self, service: str, *, force: bool = False, progress: Progress | None = None
    ) -> StepResult:
        """Run the next step (or continue an interrupted/failed one, or raise the canary)."""
        self.m.service(service)
        return self.step(service, self.next_step(service), force=force, progress=progress)

    def step(
        self, service: str, step: str, *, force: bool = False, progress: Progress | None = None
    ) -> StepResult:
        """Run `step` for `service`: order, preconditions, action, check — durably recorded."""
        s = self.m.service(service)
        if step not in STEP_CLASSES:
            raise StepRefused(f"unknown step {step!r}", f"steps are: {', '.join(STEPS)}")
        st = self.state.get(service)
        impl = STEP_CLASSES[step]
        target = STEPS.index(step)
        continuing = st.step == step and st.status in (RUNNING, FAILED)
        if st.busy and not st.interrupted:
            raise StepRefused(
                f"{service}: {st.step!r} is {st.status} in process {st.pid}",
                "wait for it to finish (`kit status`)",
            )
        if st.status == ROLLING_BACK:
            raise StepRefused(
                f"{service}: the rollback of {st.step!r} was interrupted",
                f"`kit rollback {service}` completes it first",
            )
        in_order = (
            continuing
            or target == st.done_index + 1
            or (step == st.step and st.status == DONE)  # idempotent re-run / next canary stage
        )
        if st.status in (RUNNING, FAILED) and not continuing:
            in_order = False
        refusals: list[str] = []
        if not in_order:
            at = f"at {st.step!r} ({st.status})" if st.step else "not started"
            expected = (
                st.step
                if st.status in (RUNNING, FAILED)
                else (STEPS[st.done_index + 1] if st.done_index + 1 < len(STEPS) else None)
            )
            refusals.append(
                f"step out of order: {service} is {at}; the next step is {expected!r}, not {step!r}"
            )
        ctx = Ctx(self, s, st, force=force, continuing=continuing, progress=progress)
        refusals += impl.preconditions(ctx)
        if refusals:
            message = "; ".join(refusals)
            if not force:
                self.state.audit(
                    "refused", f"step {step} refused: {message}", actor=self.actor, service=service
                )
                raise StepRefused(
                    f"{service}: step {step!r} refused: {message}",
                    "address the reasons above, or pass --force (written to the audit log)",
                )
            self.state.audit(
                "forced",
                f"step {step} forced past: {message}",
                actor=self.actor,
                service=service,
                detail={"refusals": refusals},
            )
            ctx.say(f"forced past: {message}")
        self._begin(ctx, service, step, "run")
        ctx.say(f"{service}: {'continuing' if continuing else 'running'} step {step}")
        try:
            impl.action(ctx)
            impl.check(ctx)
        except BaseException as exc:
            error = _error_text(exc)
            keep_stage = {"canary_stage": st.canary_stage} if step == "canary" else {}
            ctx.finish(FAILED, step, FAILED, error, **keep_stage)
            if not isinstance(exc, Exception):
                raise
            ctx.say(f"{service}: step {step} FAILED: {error}")
            return ctx.result(step, "run", FAILED, error)
        ctx.finish(DONE, step, DONE, **ctx.extra)
        ctx.say(f"{service}: step {step} done")
        return ctx.result(step, "run", DONE)

    def _begin(self, ctx: Ctx, service: str, step: str, action: str) -> None:
        """Record the start of a run or rollback (timing it); one already running refuses."""
        try:
            ctx.run_id, _ = self.state.begin(
                service, step, action, actor=self.actor, forced=ctx.force
            )
        except StepBusy as exc:
            raise StepRefused(str(exc), "wait for it to finish") from None
        ctx.started = time.monotonic()

    def rollback(
        self, service: str, *, force: bool = False, progress: Progress | None = None
    ) -> StepResult:
        """Undo the current step (done, failed, interrupted or half rolled back) → previous step."""
        s = self.m.service(service)
        st = self.state.get(service)
        if st.step is None:
            raise StepRefused(f"{service}: nothing to roll back (not started)")
        if st.busy and not st.interrupted:
            raise StepRefused(
                f"{service}: {st.step!r} is {st.status} in process {st.pid}",
                "wait for it to finish (`kit status`)",
            )
        step = st.step
        impl = STEP_CLASSES[step]
        ctx = Ctx(self, s, st, force=force, continuing=False, progress=progress)
        self._begin(ctx, service, step, "rollback")
        ctx.say(f"{service}: rolling back step {step}")
        prev = STEPS[STEPS.index(step) - 1] if STEPS.index(step) > 0 else None
        try:
            impl.rollback(ctx)
        except BaseException as exc:
            error = _error_text(exc)
            # a failed (not crashed) rollback leaves the step "failed": re-run it forward with
            # `kit step`, or retry `kit rollback`; both are idempotent
            ctx.finish(FAILED, step, FAILED, f"rollback failed: {error}")
            if not isinstance(exc, Exception):
                raise
            ctx.say(f"{service}: rollback of {step} FAILED: {error}")
            return ctx.result(step, "rollback", FAILED, error)
        ctx.finish(DONE, prev, DONE if prev else PENDING, **ctx.extra)
        ctx.say(f"{service}: back at {prev or 'the start'}")
        return ctx.result(step, "rollback", DONE)
