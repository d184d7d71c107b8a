"""pytest plugin: a `parity` fixture for hand-written parity checks.

Enable it with `pytest_plugins = ["parity.pytest_plugin"]` in the root conftest.py (or in a
test module), then override the configuration fixtures:

    @pytest.fixture
    def parity_control():   return monolith_app          # Flask app, URL or Backend
    @pytest.fixture
    def parity_candidate(): return "http://127.0.0.1:8001"
    @pytest.fixture
    def parity_rules():     return RuleSet.load("parity-rules.toml")
    @pytest.fixture
    def parity_auth():      return Credentials(hook="./get-token.sh")   # or {"Authorization": ...}

    def test_product_detail_matches(parity):
        parity.check("GET", "/products/42")

A failing check fails the test with a readable list of differences. Both sides get the same
credentials; a check both sides refuse (401/403) fails too, since it proved nothing (pass
`allow_denied=True` where the refusal is what is checked).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from parity.auth import Credentials, as_credentials, authenticated
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

    def check(
        self, method: str, path: str, *, allow_denied: bool = False, **kwargs: Any
    ) -> ComparisonResult:
        """Compare and fail the test on any regression (noise alone passes), and on a pair
        both sides refused unless `allow_denied`."""
        result = self.compare(method, path, **kwargs)
        failing = {Outcome.MISMATCH, Outcome.ERROR} | (set() if allow_denied else {Outcome.DENIED})
        if result.outcome in failing:
            pytest.fail(format_failure(result), pytrace=False)
        return result


def format_failure(result: ComparisonResult) -> str:
    lines = [f"parity mismatch for {result.request} ({result.endpoint}):"]
    if result.outcome is Outcome.DENIED:
        lines.append(
            f"  both sides refused it ({result.control.status if result.control else '?'}/"
            f"{result.candidate.status if result.candidate else '?'}): the check proves "
            "nothing; give credentials (a `parity_auth` fixture)"
        )
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
def parity_auth() -> Credentials | Mapping[str, str] | None:
    """Override: credentials sent to both sides — a `parity.auth.Credentials` (headers and/or
    an auth hook command, refreshed on 401) or a header mapping; none by default."""
    return None


@pytest.fixture
def parity(
    parity_control: Any, parity_candidate: Any, parity_rules: RuleSet, parity_auth: Any
) -> Iterator[ParityChecker]:
    control = as_backend(parity_control, name="control")
    candidate = as_backend(parity_candidate, name="candidate")
    credentials = as_credentials(parity_auth)
    checker = ParityChecker(
        authenticated(control, credentials),
        authenticated(candidate, credentials),
        Comparator(parity_rules),
    )
    try:
        yield checker
    finally:
        if control is not parity_control:
            control.close()
        if candidate is not parity_candidate:
            candidate.close()
