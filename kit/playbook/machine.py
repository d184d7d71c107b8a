"""The playbook's state machine: which step runs next, in order, guarded, durably recorded.

`Playbook.step` checks order and preconditions (refusals name the way forward; `force`
overrides and is audited), records the run, runs action and check, and moves the service's
state; `Playbook.rollback` undoes the current step. The steps are kit.playbook.steps, their
adapters the composition root kit.playbook.root. Docs: docs/playbook.md.
"""

from __future__ import annotations

import time
from typing import Any

from kit.manifest import Manifest
from kit.playbook import pipelines as pl
from kit.playbook.framework import (
    Ctx,
    PlanRow,
    Progress,
    StepRefused,
    StepResult,
    error_text,
)
from kit.playbook.guards import GuardContext
from kit.playbook.root import Root
from kit.playbook.state import (
    DONE,
    FAILED,
    PENDING,
    ROLLING_BACK,
    RUNNING,
    STEPS,
    StepBusy,
)
from kit.playbook.status import Status, collect_status
from kit.playbook.steps import STEP_CLASSES


class Playbook:
    """Runs, rolls back and reports the steps of every service in the manifest."""

    def __init__(
        self,
        m: Manifest,
        *,
        actor: str | None = None,
        stats: Any = None,
        root: Root | None = None,
    ) -> None:
        self.root = root if root is not None else Root(m, actor=actor, stats=stats)
        self.m = m
        self.actor = self.root.actor
        self.state = self.root.state

    # -- the adapters, from the composition root
    def stats(self) -> Any:
        return self.root.stats()

    def proxy_stats(self) -> dict[str, Any]:
        return self.root.proxy_stats()

    def transport(self) -> Any:
        return self.root.transport()

    def forward(self, service: str) -> pl.Pipeline:
        return self.root.forward(service)

    def reverse(self, service: str) -> pl.Pipeline:
        return self.root.reverse(service)

    def replica(self, service: str) -> pl.Pipeline | None:
        return self.root.replica(service)

    def lag(self, service: str, direction: str) -> list[pl.Lag]:
        return self.root.lag(service, direction)

    def guard_context(self) -> GuardContext:
        return self.root.guard_context()

    def routes(self) -> Any:
        return self.root.routes()

    def route_modes(self) -> dict[tuple[str, str], str]:
        return self.root.route_modes()

    def close(self) -> None:
        self.root.close()

    # -- reading
    def status(self) -> Status:
        """Every service's step, every endpoint's mode, CDC lag, parity (kit.playbook.status)."""
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
        ctx = Ctx(self.root, s, st, force=force, continuing=continuing, progress=progress)
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
            error = error_text(exc)
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
        ctx = Ctx(self.root, s, st, force=force, continuing=False, progress=progress)
        self._begin(ctx, service, step, "rollback")
        ctx.say(f"{service}: rolling back step {step}")
        prev = STEPS[STEPS.index(step) - 1] if STEPS.index(step) > 0 else None
        try:
            impl.rollback(ctx)
        except BaseException as exc:
            error = error_text(exc)
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
