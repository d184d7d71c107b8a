"""The step framework: what a step is (four parts), what it sees (Ctx) and what it reports.

Each step has preconditions (refusals name the reason and the way forward; `force` overrides
and is audited), an idempotent action, a check and a rollback. The state machine that runs
them is kit.playbook.machine; the steps themselves live in kit.playbook.steps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kit.manifest import ServiceSpec
from kit.playbook.state import DONE, ServiceState

if TYPE_CHECKING:
    from kit.playbook.root import Root

Progress = Callable[[str], None]
FAULT_ENV = "KIT_FAULT_PAUSE"  # "<step>:<seconds>": pause mid-action (crash-safety tests)


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


def error_text(exc: BaseException) -> str:
    """A step's failure as recorded: a StepFailed says it all, others name their type."""
    return str(exc) if isinstance(exc, StepFailed) else f"{exc.__class__.__name__}: {exc}"


class Ctx:
    """What a step sees: the manifest, its service, the playbook, and a narration channel."""

    def __init__(
        self,
        root: Root,
        service: ServiceSpec,
        state: ServiceState,
        *,
        force: bool,
        continuing: bool,
        progress: Progress | None,
        run_id: int = 0,
    ) -> None:
        self.root = root
        self.m = root.m
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
            self.root.state.save_evidence(self.run_id, self.recorded_evidence())

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
        self.root.state.finish(
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
