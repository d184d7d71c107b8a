"""The eight steps, one module per step or small group, registered in playbook order."""

from __future__ import annotations

from kit.playbook.framework import Step
from kit.playbook.steps.capture import CaptureStep, VerifyStep
from kit.playbook.steps.reads import CanaryStep, ReadsStep, ShadowStep
from kit.playbook.steps.retire import RetireStep
from kit.playbook.steps.schema import SchemaStep
from kit.playbook.steps.writes import WritesStep

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

__all__ = ["STEP_CLASSES"]
