"""Write checks: same start state, same request sequence, responses and rows compared."""

from __future__ import annotations

import pytest
from parity_testapps import create_shop_app

from parity.model import DiffKind, Request
from parity.runner import FlaskBackend, ScratchTarget, WriteScenario

STEPS = [
    Request.build(
        "POST",
        "/products",
        json_body={"sku": "NEW-1", "name": "Bench", "price": {"cents": 12999, "currency": "EUR"}},
    ),
    Request.build("POST", "/products", json_body={"sku": "NEW-2", "name": "Chair"}),
    Request.build("GET", "/products/25"),
]


def target(variant=None):
    app = create_shop_app(variant)
    store = app.config["STORE"]
    store.products.clear()  # dirty state: reset() must be what makes both sides equal
    return ScratchTarget(FlaskBackend(app), reset=store.reset, fetch_rows=store.rows)


def to_service_shape(rows):
    """Caller-supplied mapping: control rows -> candidate rows (identity plus a rename)."""
    return {"products": [dict(r) for r in rows["products"]]}


def test_equal_implementations_pass_the_write_scenario():
    result = WriteScenario("create products", STEPS, map_rows=to_service_shape).run(
        target(), target()
    )
    assert result.ok, result.describe()
    assert [s.request.method for s in result.steps] == ["POST", "POST", "GET"]


def test_a_write_divergence_shows_in_responses_and_in_rows():
    result = WriteScenario("create products", STEPS).run(target(), target("money_rounding"))
    assert not result.ok
    assert ("$.price.cents", 12999, 13000) in {
        (d.path, d.control, d.candidate) for s in result.steps for d in s.regressions
    }
    assert [(d.kind, d.path) for d in result.row_differences] == [
        (DiffKind.VALUE, "$.products['25'].price_cents")
    ]
    assert "DIFFERENT" in result.describe()


def test_ignored_columns_are_not_compared():
    scenario = WriteScenario("create", STEPS[:1], ignore_columns={"products": ["price_cents"]})
    result = scenario.run(target(), target("money_rounding"))
    assert result.row_differences == []


def test_write_checks_refuse_anything_but_two_separate_scratch_targets():
    t = target()
    with pytest.raises(TypeError, match="never live backends"):
        WriteScenario("x", STEPS).run(FlaskBackend(create_shop_app()), t)
    with pytest.raises(ValueError, match="two separate"):
        WriteScenario("x", STEPS).run(t, t)
