"""Contract fixtures: one seeded monolith database per session, and each service's database
loaded from it THROUGH the service's mapping; tests get clients on copies of them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from shoplib.db import make_engine
from tests.contract.harness import (
    SERVICES,
    load_through_mapping,
    mapping_for,
    migrate,
    service_app,
)

# Small: enough rows for several pages, sort ties and every filter, fast to build.
SEED_PLAN = {"products": 120, "customers": 80, "orders": 20}

# Rows the generic seed may not cover: sort ties, LIKE wildcards, tabs and double spaces in
# names, mixed-case e-mails, inactive products, nested categories, non-ASCII names.
EDGE_CATEGORIES = [("Garden", None), ("Benches", 1), ("Kitchen & Dining", None), ("zeta", 1)]
EDGE_PRODUCTS = [
    ("EDGE-1", "Oak 100% Bench", 12999, True),
    ("EDGE-2", "oak_bench", 12999, True),
    ("EDGE-3", "Crème Brûlée Pan", 0, False),
    ("EDGE-4", "ZINC tub", 12999, False),
    ("EDGE-5", "Äpfel-Korb", 250, True),
]
EDGE_CUSTOMERS = [
    ("Mary.Ann@Example.COM", "Mary Ann Smith"),
    ("cher@example.com", "Cher"),
    ("al.tab@example.com", "Al\tB"),
    ("al.space@example.com", "Al B"),
    ("jl@example.com", "  Jean-Luc  Picard "),
    ("ZOE@EXAMPLE.COM", "zoë 100%_done"),
]


def monolith_app(url: str) -> Flask:
    from monolith.app import create_app
    from monolith.config import MonolithConfig

    return create_app(MonolithConfig(database_url=url))


def _seed_monolith(url: str) -> None:
    """The monolith's own seed at a small scale, then the edge rows through its HTTP API."""
    from monolith.seed import SeedPlan, seed_database

    engine = make_engine(url)
    try:
        seed_database(engine, SeedPlan(**SEED_PLAN))
    finally:
        engine.dispose()
    app = monolith_app(url)
    client = app.test_client()
    category_ids = []
    for name, parent in EDGE_CATEGORIES:
        parent_id = category_ids[parent - 1] if parent else None
        response = client.post("/categories", json={"name": name, "parent_id": parent_id})
        assert response.status_code == 201, response.get_json()
        category_ids.append(response.get_json()["id"])
    for index, (sku, name, cents, active) in enumerate(EDGE_PRODUCTS):
        body = {
            "sku": sku,
            "name": name,
            "category_id": category_ids[index % len(category_ids)],
            "price": {"cents": cents, "currency": "EUR"},
            "active": active,
        }
        response = client.post("/products", json=body)
        assert response.status_code == 201, response.get_json()
    for email, name in EDGE_CUSTOMERS:
        response = client.post("/customers", json={"email": email, "name": name})
        assert response.status_code == 201, response.get_json()
    app.extensions["database"].engine.dispose()


@dataclass(frozen=True)
class Databases:
    """SQLite files of the seeded monolith and of each service loaded through its mapping."""

    monolith: Path
    services: dict[str, Path]
    loaded: dict[str, int]


@pytest.fixture(scope="session")
def seeded_databases(tmp_path_factory: pytest.TempPathFactory) -> Databases:
    folder = tmp_path_factory.mktemp("contract")
    monolith_path = folder / "monolith.db"
    monolith_url = f"sqlite:///{monolith_path}"
    migrate("monolith", monolith_url)
    _seed_monolith(monolith_url)
    source = make_engine(monolith_url)
    services: dict[str, Path] = {}
    loaded: dict[str, int] = {}
    try:
        for service in SERVICES:
            path = folder / f"{service}.db"
            url = f"sqlite:///{path}"
            migrate(service, url)
            target = make_engine(url)
            try:
                loaded |= load_through_mapping(source, target, mapping_for(service))
            finally:
                target.dispose()
            services[service] = path
    finally:
        source.dispose()
    return Databases(monolith_path, services, loaded)


@dataclass
class Sides:
    """Test clients on both sides of one contract, starting from the same data."""

    monolith: FlaskClient
    service: FlaskClient


def _sides(databases: Databases, service: str, folder: Path | None) -> Iterator[Sides]:
    monolith_path, service_path = databases.monolith, databases.services[service]
    if folder is not None:  # a private copy for tests that write
        monolith_path = Path(shutil.copy(monolith_path, folder / "monolith.db"))
        service_path = Path(shutil.copy(service_path, folder / f"{service}.db"))
    apps = [
        monolith_app(f"sqlite:///{monolith_path}"),
        service_app(service, f"sqlite:///{service_path}"),
    ]
    try:
        yield Sides(apps[0].test_client(), apps[1].test_client())
    finally:
        for app in apps:
            app.extensions["database"].engine.dispose()


@pytest.fixture(scope="session")
def catalog_sides(seeded_databases: Databases) -> Iterator[Sides]:
    """Read-only: shared by every read test of the session."""
    yield from _sides(seeded_databases, "catalog", None)


@pytest.fixture(scope="session")
def customers_sides(seeded_databases: Databases) -> Iterator[Sides]:
    yield from _sides(seeded_databases, "customers", None)


@pytest.fixture
def catalog_write_sides(seeded_databases: Databases, tmp_path: Path) -> Iterator[Sides]:
    """Private copies of both databases for a write sequence."""
    yield from _sides(seeded_databases, "catalog", tmp_path)


@pytest.fixture
def customers_write_sides(seeded_databases: Databases, tmp_path: Path) -> Iterator[Sides]:
    yield from _sides(seeded_databases, "customers", tmp_path)
