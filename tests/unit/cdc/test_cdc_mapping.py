"""The mapping engine: loading, validation errors, forward and reverse transforms."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cdc.mapping import MappingError, load_mapping, parse_mapping
from tests.unit.cdc.synthetic import MAPPING_TOML


def _spec(tmp_path: Path):
    p = tmp_path / "m.toml"
    p.write_text(MAPPING_TOML)
    return load_mapping(p)


def test_mapping_file_loads_into_typed_tables(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert spec.service == "shopfront"
    products = spec.for_source("products")
    assert products.target == "catalog_product"
    assert products.key == ("id",)
    assert products.source_key == ("id",)
    assert products.filters[0].op == "not_null"


def test_forward_applies_renames_scale_slug_bool_and_split(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    row = {
        "id": 42,
        "sku": "S1",
        "name": "Oak Bench",
        "price_cents": 1999,
        "currency": "EUR",
        "active": 1,
        "created_at": "2024-01-01",
        "updated_at": "x",
    }
    out = spec.for_source("products").forward(row)
    assert out["price_amount"] == Decimal("19.99")
    assert out["slug"] == "oak-bench-42"
    assert out["title"] == "Oak Bench"
    assert out["is_listed"] is True
    cust = spec.for_source("customers").forward(
        {"id": 1, "email": "Ann@X.COM", "full_name": "Ann Lee Smith", "created_at": None}
    )
    assert cust == {
        "id": 1,
        "email": "ann@x.com",
        "first_name": "Ann",
        "last_name": "Lee Smith",
        "joined_at": None,
    }


def test_reverse_inverts_copies_and_explicit_transforms(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    products = spec.for_source("products")
    target_row = {
        "id": 7,
        "sku": "S7",
        "title": "Chair",
        "slug": "chair-7",
        "price_amount": Decimal("12.50"),
        "currency": "EUR",
        "is_listed": False,
        "created_at": "2024-01-01",
    }
    back = products.reverse_row(target_row)
    assert back["price_cents"] == 1250
    assert back["name"] == "Chair"
    assert back["active"] is False
    assert back["id"] == 7 and back["sku"] == "S7"
    assert "slug" not in back


def test_filter_decides_whether_a_row_is_carried(tmp_path: Path) -> None:
    products = _spec(tmp_path).for_source("products")
    assert products.matches({"sku": "A"})
    assert not products.matches({"sku": None})


def test_strict_table_rejects_an_unmapped_source_column_naming_it(tmp_path: Path) -> None:
    customers = _spec(tmp_path).for_source("customers")
    with pytest.raises(MappingError, match="customers.*strict.*nickname"):
        customers.forward(
            {"id": 1, "email": "a", "full_name": None, "created_at": None, "nickname": "x"}
        )


def test_non_strict_table_ignores_new_source_columns(tmp_path: Path) -> None:
    products = _spec(tmp_path).for_source("products")
    row = {
        "id": 1,
        "sku": "s",
        "name": "n",
        "price_cents": 1,
        "currency": "EUR",
        "active": 0,
        "created_at": None,
        "updated_at": None,
        "new_col": 5,
    }
    assert "new_col" not in products.forward(row)


def test_transform_failure_names_table_and_column(tmp_path: Path) -> None:
    products = _spec(tmp_path).for_source("products")
    with pytest.raises(MappingError, match="'products'.*'price_amount'.*scale"):
        products.forward(
            {
                "id": 1,
                "sku": "s",
                "name": "n",
                "price_cents": "abc",
                "currency": "EUR",
                "active": 1,
                "created_at": None,
            }
        )


def test_unknown_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="unknown table 'orders'"):
        _spec(tmp_path).for_source("orders")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"tables": []}, "service"),
        ({"service": "s", "tables": []}, "no \\[\\[tables\\]\\]"),
        (
            {"service": "s", "tables": [{"source": "a", "target": "b", "key": ["id"]}]},
            "'a'.*columns",
        ),
        (
            {
                "service": "s",
                "tables": [
                    {"source": "a", "target": "b", "key": ["nope"], "columns": {"id": "id"}}
                ],
            },
            "key column 'nope'",
        ),
        (
            {
                "service": "s",
                "tables": [
                    {
                        "source": "a",
                        "target": "b",
                        "key": ["id"],
                        "columns": {"id": "id", "x": {"from": "y", "transform": "zap"}},
                    }
                ],
            },
            "column 'x'.*unknown transform 'zap'",
        ),
        (
            {
                "service": "s",
                "tables": [
                    {
                        "source": "a",
                        "target": "b",
                        "key": ["id"],
                        "columns": {"id": "id", "x": {"from": "y", "transform": "scale"}},
                    }
                ],
            },
            "column 'x'.*needs \\['exp'\\]",
        ),
        (
            {
                "service": "s",
                "tables": [
                    {
                        "source": "a",
                        "target": "b",
                        "key": ["id"],
                        "columns": {"id": "id", "x": {"from": ["y", "z"], "transform": "lower"}},
                    }
                ],
            },
            "column 'x'.*input",
        ),
        (
            {
                "service": "s",
                "tables": [
                    {
                        "source": "a",
                        "target": "b",
                        "key": ["id"],
                        "filter": [{"column": "c", "op": "like"}],
                        "columns": {"id": "id"},
                    }
                ],
            },
            "unknown op 'like'",
        ),
        (
            {
                "service": "s",
                "tables": [
                    {
                        "source": "a",
                        "target": "b",
                        "key": ["id"],
                        "colums": {},
                        "columns": {"id": "id"},
                    }
                ],
            },
            "unknown key",
        ),
    ],
)
def test_invalid_mappings_are_rejected_with_the_fault_named(doc: dict, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        parse_mapping(doc)


def test_missing_or_broken_file_is_reported_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="does not exist"):
        load_mapping(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("service = ")
    with pytest.raises(MappingError, match="not valid TOML"):
        load_mapping(bad)


def test_generic_transforms_behave_as_documented() -> None:
    spec = parse_mapping(
        {
            "service": "s",
            "tables": [
                {
                    "source": "a",
                    "target": "b",
                    "key": ["id"],
                    "columns": {
                        "id": "id",
                        "big": {"from": "n", "transform": "scale", "args": {"exp": 2}},
                        "up": {"from": "s", "transform": "upper"},
                        "st": {"from": "s", "transform": "strip"},
                        "j": {
                            "from": ["s", "none", "n"],
                            "transform": "join",
                            "args": {"sep": "/"},
                        },
                        "c": {"transform": "constant", "args": {"value": "k"}},
                        "second": {"from": "s", "transform": "split", "args": {"part": 1}},
                        "flag": {"from": "t", "transform": "bool"},
                    },
                }
            ],
        }
    )
    out = spec.tables[0].forward({"id": 1, "n": 3, "s": " ab ", "none": None, "t": "true"})
    assert out["big"] == 300 and isinstance(out["big"], int)
    assert out["up"] == " AB " and out["st"] == "ab"
    assert out["j"] == " ab /3"
    assert out["c"] == "k"
    assert out["second"] == "ab "
    assert out["flag"] is True
