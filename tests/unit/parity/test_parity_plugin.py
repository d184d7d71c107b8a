"""The pytest plugin's `parity` fixture, run inside a nested pytest session."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent

CONFTEST = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import pytest
from parity_testapps import create_shop_app
from parity.rules import RuleSet

pytest_plugins = ["parity.pytest_plugin"]

@pytest.fixture
def parity_control():
    return create_shop_app()

@pytest.fixture
def parity_candidate(request):
    return create_shop_app(getattr(request, "param", None))

@pytest.fixture
def parity_rules():
    return RuleSet.from_dict({{"endpoints": [{{"endpoint": "GET /products/<int:id>", "ignore": ["$.tags"]}}]}})
"""

TESTS = """
import pytest

def test_equal_product(parity):
    parity.check("GET", "/products/3")

@pytest.mark.parametrize("parity_candidate", ["money_rounding"], indirect=True)
def test_rounded_money(parity):
    parity.check("GET", "/products/3")

@pytest.mark.parametrize("parity_candidate", ["money_rounding"], indirect=True)
def test_compare_does_not_fail(parity):
    result = parity.compare("GET", "/products/3")
    assert result.outcome == "mismatch"
"""


def test_parity_fixture_passes_equal_and_fails_divergent_with_a_readable_diff(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_shop=TESTS)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "parity mismatch for GET /products/3 (GET /products/<int:id>):" in out
    assert "value at $.price.cents: control=12999 candidate=13000" in out


def test_parity_fixture_without_configuration_explains_what_to_define(pytester):
    pytester.makeconftest('pytest_plugins = ["parity.pytest_plugin"]')
    pytester.makepyfile(test_x="def test_x(parity):\n    parity.check('GET', '/')\n")
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    assert "define a `parity_control` fixture" in result.stdout.str()
