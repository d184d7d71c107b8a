"""The comparison itself: it must see real differences and forgive only fresh timestamps."""

from __future__ import annotations

import pytest

from tests.contract.conftest import Sides
from tests.contract.harness import Exchange, assert_same, differences, send


def test_equal_documents_have_no_differences_and_timestamps_are_checked_by_format() -> None:
    left = {"id": 1, "created_at": "2026-01-01T00:00:00.000000Z", "price": {"cents": 1}}
    right = {"id": 1, "created_at": "2026-11-21T22:05:27.123456Z", "price": {"cents": 1}}
    assert differences(left, right) == []
    assert differences(left, right | {"created_at": "yesterday"}) != []


def test_values_key_order_and_types_count_as_differences() -> None:
    assert differences({"a": 1, "b": 2}, {"b": 2, "a": 1}) == ["$: keys ['a', 'b'] != ['b', 'a']"]
    assert differences({"a": 1}, {"a": 1.0}) == ["$.a: 1 != 1.0"]
    assert differences({"a": True}, {"a": 1}) == ["$.a: True != 1"]
    assert differences([1, 2], [1]) == ["$: 2 items != 1 items"]
    assert differences({"items": [{"name": "x"}]}, {"items": [{"name": "y"}]}) == [
        "$.items[0].name: 'x' != 'y'"
    ]


def test_a_different_answer_fails_the_contract(catalog_sides: Sides) -> None:
    exchange = Exchange(
        "GET",
        "/products",
        send(catalog_sides.monolith, "GET", "/products?page=1"),
        send(catalog_sides.service, "GET", "/products?page=2"),
    )
    with pytest.raises(AssertionError):
        assert_same(exchange)
