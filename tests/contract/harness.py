"""Test plumbing for the extracted services: migrations, apps on fresh databases, and loading
monolith rows into a service database THROUGH its mapping (no per-table copy code).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, MetaData, Table, insert, select
from sqlalchemy.exc import SAWarning
from werkzeug.test import TestResponse

from cdc.mapping import MappingSpec, load_mapping
from kit import alembic_runner
from migrations import shop_migrations

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("catalog", "customers")


def migrate(database: str, url: str, revision: str = "head") -> None:
    """Upgrade `url` with `migrations/<database>` through the kit's own runner."""
    alembic_runner.upgrade(shop_migrations(database), url, revision)


def downgrade(database: str, url: str, revision: str = "base") -> None:
    alembic_runner.downgrade(shop_migrations(database), url, revision)


def service_app(service: str, url: str) -> Flask:
    """The service's app on `url` (already migrated by the caller)."""
    if service == "catalog":
        from extracted.catalog.app import create_app as create_catalog
        from extracted.catalog.config import CatalogConfig

        return create_catalog(CatalogConfig(database_url=url))
    if service == "customers":
        from extracted.customers.app import create_app as create_customers
        from extracted.customers.config import CustomersConfig

        return create_customers(CustomersConfig(database_url=url))
    raise ValueError(f"unknown service {service!r}")


def mapping_for(service: str) -> MappingSpec:
    return load_mapping(ROOT / "extracted" / service / "mapping.toml")


def _rows(engine: Engine, table: Table, order: Iterable[str]) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        statement = select(table).order_by(*(table.c[name] for name in order))
        return [dict(row._mapping) for row in connection.execute(statement)]


def load_through_mapping(source: Engine, target: Engine, spec: MappingSpec) -> dict[str, int]:
    """Copy every row of the mapped source tables into the target, transformed by `spec`.

    Rows go in key order (parents before children for self-references keyed by id); rows
    failing the mapping's filters are skipped. Returns the number of rows loaded per table.
    """
    source_meta, target_meta = MetaData(), MetaData()
    loaded: dict[str, int] = {}
    with target.begin() as connection:
        for table in spec.tables:
            with warnings.catch_warnings():  # expression indexes (lower(email)) are not needed
                warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
                source_table = Table(table.source, source_meta, autoload_with=source)
            target_table = Table(table.target, target_meta, autoload_with=target)
            rows = [
                table.forward(row)
                for row in _rows(source, source_table, table.source_key)
                if table.matches(row)
            ]
            if rows:
                connection.execute(insert(target_table), rows)
            loaded[table.target] = len(rows)
    return loaded


# --------------------------------------------------------------------------------------------
# comparing responses

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
# Set at write time by each side's own clock: compared by format only when they differ.
VOLATILE = frozenset({"created_at", "updated_at"})


@dataclass(frozen=True)
class Exchange:
    """One request and what each side answered."""

    method: str
    path: str
    monolith: TestResponse
    service: TestResponse


def send(client: FlaskClient, method: str, path: str, **kwargs: Any) -> TestResponse:
    return client.open(path, method=method, **kwargs)


def differences(monolith: Any, service: Any, where: str = "$") -> list[str]:
    """Where two JSON documents differ, except volatile timestamps that are both well-formed."""
    if isinstance(monolith, dict) and isinstance(service, dict):
        found: list[str] = []
        if list(monolith) != list(service):
            found.append(f"{where}: keys {list(monolith)} != {list(service)}")
        for key in monolith.keys() & service.keys():
            left, right = monolith[key], service[key]
            if key in VOLATILE and left != right:
                if not (isinstance(left, str) and isinstance(right, str)):
                    found.append(f"{where}.{key}: {left!r} != {right!r}")
                elif not (TIMESTAMP.match(left) and TIMESTAMP.match(right)):
                    found.append(f"{where}.{key}: malformed timestamp {left!r} / {right!r}")
                continue
            found.extend(differences(left, right, f"{where}.{key}"))
        return found
    if isinstance(monolith, list) and isinstance(service, list):
        if len(monolith) != len(service):
            return [f"{where}: {len(monolith)} items != {len(service)} items"]
        found = []
        for index, (left, right) in enumerate(zip(monolith, service, strict=True)):
            found.extend(differences(left, right, f"{where}[{index}]"))
        return found
    if type(monolith) is not type(service) or monolith != service:
        return [f"{where}: {monolith!r} != {service!r}"]
    return []


def assert_same(exchange: Exchange) -> None:
    """Equal status, equal Allow header, equal JSON (or equal raw body when not JSON)."""
    left, right = exchange.monolith, exchange.service
    label = f"{exchange.method} {exchange.path}"
    assert left.status_code == right.status_code, (
        f"{label}: status {left.status_code} != {right.status_code}\n"
        f"monolith: {left.get_data(as_text=True)}\nservice: {right.get_data(as_text=True)}"
    )
    assert left.headers.get("Allow") == right.headers.get("Allow"), label
    if left.is_json or right.is_json:
        problems = differences(left.get_json(), right.get_json())
        assert not problems, f"{label}:\n" + "\n".join(problems)
    else:
        assert left.get_data() == right.get_data(), label


def compare(
    monolith: FlaskClient, service: FlaskClient, method: str, path: str, **kwargs: Any
) -> Exchange:
    """Send the same request to both sides and require the same answer."""
    exchange = Exchange(
        method, path, send(monolith, method, path, **kwargs), send(service, method, path, **kwargs)
    )
    assert_same(exchange)
    return exchange
