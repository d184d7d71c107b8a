"""parity: compare monolith and service responses — record, replay, diff, and tell noise
from regressions.

Modules: `model` (records), `compare` (comparator), `rules` (per-endpoint rules), `noise`
(Diffy-style noise learning), `recording` (recording store, redaction, shadow-pair sink,
statistics), `sources` (recordings, OpenAPI, lists), `runner` (backends, replay, write
checks), `report` (table, JSON, HTML), `pytest_plugin` (the `parity` fixture).
This package never imports `monolith` or `extracted`.
"""

from parity.compare import Comparator, diff_json, diff_text
from parity.model import (
    ABSENT,
    ComparisonResult,
    Difference,
    DiffKind,
    Exchange,
    Outcome,
    Pair,
    Request,
    Response,
)
from parity.rules import EndpointRules, RulesError, RuleSet

__all__ = [
    "ABSENT",
    "Comparator",
    "ComparisonResult",
    "DiffKind",
    "Difference",
    "EndpointRules",
    "Exchange",
    "Outcome",
    "Pair",
    "Request",
    "Response",
    "RuleSet",
    "RulesError",
    "diff_json",
    "diff_text",
]
