"""Events shaped exactly like Debezium's PostgreSQL connector emits them (JSON converter)."""

from __future__ import annotations

import base64
import json
from typing import Any


def _field(
    name: str,
    type_: str,
    logical: str | None = None,
    optional: bool = True,
    parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    f: dict[str, Any] = {"type": type_, "optional": optional, "field": name}
    if logical:
        f["name"] = logical
        f["version"] = 1
    if parameters:
        f["parameters"] = parameters
    return f


PRODUCT_FIELDS = [
    _field("id", "int32", optional=False),
    _field("sku", "string"),
    _field("name", "string", optional=False),
    _field("price_cents", "int32", optional=False),
    _field("currency", "string", optional=False),
    _field("active", "boolean", optional=False),
    _field("created_at", "int64", "io.debezium.time.MicroTimestamp"),
    _field("updated_at", "string", "io.debezium.time.ZonedTimestamp"),
]

SOURCE_SCHEMA = {
    "type": "struct",
    "fields": [
        _field("version", "string", optional=False),
        _field("connector", "string", optional=False),
        _field("name", "string", optional=False),
        _field("ts_ms", "int64", optional=False),
        _field("snapshot", "string", "io.debezium.data.Enum"),
        _field("db", "string", optional=False),
        _field("sequence", "string"),
        _field("schema", "string", optional=False),
        _field("table", "string", optional=False),
        _field("txId", "int64"),
        _field("lsn", "int64"),
        _field("xmin", "int64"),
    ],
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "field": "source",
}


def value_schema(table: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    row = {
        "type": "struct",
        "fields": fields,
        "optional": True,
        "name": f"dbserver1.public.{table}.Value",
    }
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            SOURCE_SCHEMA,
            _field("op", "string", optional=False),
            _field("ts_ms", "int64"),
            {
                "type": "struct",
                "fields": [
                    _field("id", "string", optional=False),
                    _field("total_order", "int64", optional=False),
                    _field("data_collection_order", "int64", optional=False),
                ],
                "optional": True,
                "name": "event.block",
                "field": "transaction",
            },
        ],
        "optional": False,
        "name": f"dbserver1.public.{table}.Envelope",
    }


def source(table: str, lsn: int, snapshot: str = "false") -> dict[str, Any]:
    return {
        "version": "2.5.0.Final",
        "connector": "postgresql",
        "name": "dbserver1",
        "ts_ms": 1559033904863,
        "snapshot": snapshot,
        "db": "postgres",
        "sequence": f'["24023119","{lsn}"]',
        "schema": "public",
        "table": table,
        "txId": 555,
        "lsn": lsn,
        "xmin": None,
    }


def product_payload(op: str, before: dict | None, after: dict | None, lsn: int) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": source("products", lsn),
        "op": op,
        "ts_ms": 1559033904863,
        "transaction": None,
    }


def product_row(pid: int, price_cents: int = 1999, name: str = "Oak Bench") -> dict[str, Any]:
    return {
        "id": pid,
        "sku": f"DBZ-{pid}",
        "name": name,
        "price_cents": price_cents,
        "currency": "EUR",
        "active": True,
        "created_at": 1704164645000000,  # 2024-01-02T03:04:05 as MicroTimestamp
        "updated_at": "2024-01-02T03:04:05.000000Z",
    }


def wrapped(payload: dict[str, Any], table: str = "products", fields: list | None = None) -> bytes:
    return json.dumps(
        {"schema": value_schema(table, fields or PRODUCT_FIELDS), "payload": payload}
    ).encode()


def plain(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def wrapped_key(pid: int) -> bytes:
    return json.dumps(
        {
            "schema": {
                "type": "struct",
                "name": "dbserver1.public.products.Key",
                "optional": False,
                "fields": [_field("id", "int32", optional=False)],
            },
            "payload": {"id": pid},
        }
    ).encode()


def decimal_bytes(unscaled: int) -> str:
    length = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()
