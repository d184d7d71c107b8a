"""Round-trip properties of the conversions between the monolith's and the services' rows."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from cdc.mapping import load_mapping
from extracted.catalog.service import amount_to_cents, cents_to_amount, product_slug
from extracted.customers.service import join_name, normalize_email, split_name
from tests.contract.harness import ROOT

stripped_names = st.text(min_size=1, max_size=200).map(str.strip).filter(bool)
cents = st.integers(min_value=0, max_value=10**12 - 1)


@given(stripped_names)
def test_any_stripped_name_splits_and_joins_back_exactly(name: str) -> None:
    given_name, family_name = split_name(name)
    assert join_name(given_name, family_name) == name
    assert " " not in given_name
    assert family_name is None or family_name != ""


@given(stripped_names)
def test_the_mapping_splits_names_exactly_as_the_service_does(name: str) -> None:
    table = load_mapping(ROOT / "extracted/customers/mapping.toml").for_source("customers")
    row = {"id": 1, "email": "A@B.C", "full_name": name, "phone": None,
           "created_at": None, "updated_at": None}  # fmt: skip
    target = table.forward(row)
    assert (target["given_name"], target["family_name"]) == split_name(name)
    assert target["email_normalized"] == normalize_email("A@B.C")
    assert table.reverse_row(target)["full_name"] == name


@given(cents)
def test_any_non_negative_cents_round_trip_through_the_decimal_amount(value: int) -> None:
    amount = cents_to_amount(value)
    assert amount.as_tuple().exponent == -2
    assert amount * 100 == value
    assert amount_to_cents(amount) == value


@given(cents, st.text(max_size=50), st.integers(min_value=1, max_value=2**31 - 1))
def test_the_mapping_prices_and_slugs_products_as_the_service_does(
    value: int, name: str, ident: int
) -> None:
    table = load_mapping(ROOT / "extracted/catalog/mapping.toml").for_source("products")
    row = {"id": ident, "sku": "S", "name": name, "description": "", "category_id": 1,
           "price_cents": value, "currency": "EUR", "active": True,
           "created_at": None, "updated_at": None}  # fmt: skip
    target = table.forward(row)
    assert Decimal(target["price_amount"]) == cents_to_amount(value)
    assert target["slug"] == product_slug(name, ident)
    assert table.reverse_row(target)["price_cents"] == value


def test_fractions_of_a_cent_are_refused() -> None:
    try:
        amount_to_cents(Decimal("1.005"))
    except ValueError as error:
        assert "whole number of cents" in str(error)
    else:  # pragma: no cover
        raise AssertionError("1.005 was accepted")
