"""The migration playbook: guarded, durable, idempotent steps per service (docs/playbook.md)."""

from kit.playbook.framework import PlanRow, StepFailed, StepRefused, StepResult
from kit.playbook.machine import Playbook
from kit.playbook.state import STEPS
from kit.playbook.status import Status, collect_status

__all__ = [
    "STEPS",
    "PlanRow",
    "Playbook",
    "Status",
    "StepFailed",
    "StepRefused",
    "StepResult",
    "collect_status",
]
