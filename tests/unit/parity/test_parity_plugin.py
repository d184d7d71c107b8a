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


TOKEN_CONFTEST = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import pytest
from flask import Flask, Response
from parity_testapps import TokenBook, create_token_app

pytest_plugins = ["parity.pytest_plugin"]

BOOK = TokenBook()

@pytest.fixture
def parity_control():
    return create_token_app(BOOK)

@pytest.fixture
def parity_candidate():
    return create_token_app(BOOK, "renamed_thing")

@pytest.fixture
def parity_auth(request):
    if getattr(request, "param", "login") == "none":
        return None
    return {{"Authorization": "Bearer " + BOOK.issue()}}

def deep_app(leaf):
    app = Flask("deep")
    body = '{{"a":[' * 600 + leaf + ']}}' * 600

    @app.get("/deep")
    def deep():
        return Response(body, content_type="application/json")

    return app
"""

TOKEN_TESTS = """
import pytest
from parity.auth import authenticated
from parity.compare import Comparator
from parity.pytest_plugin import ParityChecker
from parity.runner import FlaskBackend
from conftest import deep_app

def test_logged_in_equal_thing(parity):
    parity.check("GET", "/things/1")

def test_logged_in_renamed_thing(parity):
    parity.check("GET", "/things/2")

@pytest.mark.parametrize("parity_auth", ["none"], indirect=True)
def test_anonymous_check_proves_nothing(parity):
    parity.check("GET", "/things/1")

@pytest.mark.parametrize("parity_auth", ["none"], indirect=True)
def test_anonymous_refusal_checked_on_purpose(parity):
    assert parity.check("GET", "/things/1", allow_denied=True).outcome == "denied"

def test_deep_json_fails_the_check():
    checker = ParityChecker(FlaskBackend(deep_app("1")), FlaskBackend(deep_app("2")), Comparator())
    checker.check("GET", "/deep")
"""


def test_parity_fixture_sends_credentials_to_both_sides_and_fails_hollow_or_deep_checks(pytester):
    pytester.makeconftest(TOKEN_CONFTEST)
    pytester.makepyfile(test_things=TOKEN_TESTS)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=3)  # no errors: a deep body is a failure
    out = result.stdout.str()
    assert "both sides refused it (401/401): the check proves nothing" in out
    assert "$.name" in out and "body at $" + ".a[0]" * 3 in out
