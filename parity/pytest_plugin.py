"""pytest plugin: a `parity` fixture for hand-written parity checks.

Enable it with `pytest_plugins = ["parity.pytest_plugin"]` in the root conftest.py (or in a
test module), then override the configuration fixtures:

    @pytest.fixture
    def parity_control():   return monolith_app          # Flask app, URL or Backend
    @pytest.fixture
    def parity_candidate(): return "http://127.0.0.1:8001"
    @pytest.fixture
    def parity_rules():     return RuleSet.load("parity-rules.toml")

    def test_product_detail_matches(parity):
        parity.check("GET", "/products/42")

A failing check fails the test with a readable list of differences.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from parity.compare import Comparator
from parity.model import ComparisonResult, Outcome, Request
from parity.rules import RuleSet
from parity.runner import Backend, as_backend


class ParityChecker:
    """What the `parity` fixture returns."""

    def __init__(self, control: Backend, candidate: Backend, comparator: Comparator) -> None:
        self.control = control
        self.candidate = candidate
        self.comparator = comparator
        self.results: list[ComparisonResult] = []

    def compare(
        self,
        method: str,
        path: str,
        *,
        query: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | str = b"",
        learn_noise: bool = False,
    ) -> ComparisonResult:
        """Compare without failing; `learn_noise` asks the control twice and treats paths
        where it disagrees with itself as noise."""
        req = Request.build(method, path, query=query, headers=headers, json_body=json, body=body)
        control = self.control.send(req)
        try:
            candidate = self.candidate.send(req)
            error = None
        except Exception as exc:  # noqa: BLE001
            candidate, error = None, f"candidate failed: {exc}"
        secondary = self.control.send(req) if learn_noise else None
        result = self.comparator.compare(
            req, control, candidate, candidate_error=error, secondary=secondary
        )
        self.results.append(result)
        return result

    def check(self, method: str, path: str, **kwargs: Any) -> ComparisonResult:
        """Compare and fail the test on any regression (noise alone passes)."""
        result = self.compare(method, path, **kwargs)
        if result.outcome in (Outcome.MISMATCH, Outcome.ERROR):
            pytest.fail(format_failure(result), pytrace=False)
        return result


def format_failure(result: ComparisonResult) -> str:
    lines = [f"parity mismatch for {result.request} ({result.endpoint}):"]
    if result.error:
        lines.append(f"  {result.error}")
    for d in result.regressions[:30]:
        lines.append(f"  - {d.describe()}")
    if len(result.regressions) > 30:
        lines.append(f"  ... and {len(result.regressions) - 30} more")
    if result.noise:
        lines.append(f"  ({len(result.noise)} noise difference(s) not counted)")
    return "\n".join(lines)


@pytest.fixture
def parity_control() -> Any:
    """Override: the control (monolith) — a Flask app, a base URL or a parity Backend."""
    raise pytest.UsageError("define a `parity_control` fixture (Flask app, URL or Backend)")


@pytest.fixture
def parity_candidate() -> Any:
    """Override: the candidate (extracted service) — a Flask app, a base URL or a Backend."""
    raise pytest.UsageError("define a `parity_candidate` fixture (Flask app, URL or Backend)")


@pytest.fixture
def parity_rules() -> RuleSet:
    """Override to give comparison rules; defaults to none."""
    return RuleSet()


@pytest.fixture
def parity(
    parity_control: Any, parity_candidate: Any, parity_rules: RuleSet
) -> Iterator[ParityChecker]:
    control = as_backend(parity_control, name="control")
    candidate = as_backend(parity_candidate, name="candidate")
    checker = ParityChecker(control, candidate, Comparator(parity_rules))
    try:
        yield checker
    finally:
        if control is not parity_control:
            control.close()
        if candidate is not parity_candidate:
            candidate.close()
