"""The read steps: `shadow`, `canary` (staged shares) and `reads`."""

from __future__ import annotations

from kit.playbook.framework import Ctx, Step
from kit.playbook.state import DONE, FAILED, RUNNING
from kit.playbook.steps.common import (
    check_modes,
    parity_evidence,
    parity_gate,
    ready_refusals,
    route_refusals,
    set_mode,
)


class ShadowStep(Step):
    name = "shadow"

    def preconditions(self, ctx: Ctx) -> list[str]:
        return ready_refusals(ctx) + route_refusals(ctx, ctx.s.read_endpoints, "shadow", "shadow")

    def action(self, ctx: Ctx) -> None:
        if not ctx.continuing:
            stats = ctx.root.stats()
            for e in ctx.s.read_endpoints:
                stats.reset(e.label)
            ctx.say("shadow: parity statistics of the read endpoints reset")
        set_mode(ctx, ctx.s.read_endpoints, "shadow", "shadow", guarded=False)
        ctx.evidence["endpoints"] = [e.label for e in ctx.s.read_endpoints]

    def check(self, ctx: Ctx) -> None:
        check_modes(ctx, ctx.s.read_endpoints, "shadow")

    def rollback(self, ctx: Ctx) -> None:
        set_mode(ctx, ctx.s.read_endpoints, "monolith", "rollback shadow")


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
            ready_refusals(ctx)
            + parity_gate(ctx)
            + route_refusals(ctx, ctx.s.read_endpoints, f"canary:{pct}", "canary")
        )

    def action(self, ctx: Ctx) -> None:
        stages = ctx.m.guards.canary_stages
        stage = min(self.stage(ctx), len(stages) - 1)
        pct = stages[stage]
        ctx.evidence["parity"] = parity_evidence(ctx)
        set_mode(
            ctx, ctx.s.read_endpoints, f"canary:{pct}", f"canary stage {stage + 1}", guarded=False
        )
        ctx.evidence["percent"] = pct
        ctx.evidence["stage"] = f"{stage + 1}/{len(stages)}"
        ctx.extra["canary_stage"] = stage
        ctx.say(f"canary: {pct}% of read traffic to {ctx.s.name} (stage {stage + 1}/{len(stages)})")

    def check(self, ctx: Ctx) -> None:
        check_modes(ctx, ctx.s.read_endpoints, f"canary:{ctx.evidence['percent']}")

    def rollback(self, ctx: Ctx) -> None:
        set_mode(ctx, ctx.s.read_endpoints, "shadow", "rollback canary")
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
            + ready_refusals(ctx)
            + parity_gate(ctx)
            + route_refusals(ctx, ctx.s.read_endpoints, "extracted", "reads")
        )

    def action(self, ctx: Ctx) -> None:
        ctx.evidence["parity"] = parity_evidence(ctx)
        set_mode(ctx, ctx.s.read_endpoints, "extracted", "reads", fallback=True, guarded=False)

    def check(self, ctx: Ctx) -> None:
        check_modes(ctx, ctx.s.read_endpoints, "extracted")

    def rollback(self, ctx: Ctx) -> None:
        stages = ctx.m.guards.canary_stages
        set_mode(ctx, ctx.s.read_endpoints, f"canary:{stages[-1]}", "rollback reads")
        ctx.extra["canary_stage"] = len(stages) - 1
