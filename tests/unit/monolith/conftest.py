"""Monolith fixtures: one Alembic-migrated SQLite template per session, a fresh copy per test.

Copying a migrated file is far cheaper than migrating per test, yet every test database was
built by the real migrations, so they are exercised on every run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from kit import alembic_runner
from migrations import shop_migrations
from monolith.app import create_app
from monolith.config import MonolithConfig


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("monolith-template") / "monolith.db"
    alembic_runner.upgrade(shop_migrations("monolith"), f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(tmp_path: Path, migrated_template: Path) -> str:
    path = tmp_path / "monolith.db"
    shutil.copy(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    application = create_app(MonolithConfig(database_url=db_url))
    yield application
    application.extensions["database"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Shop:
    """Creates shop data through the HTTP API, asserting each step worked."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self._sku = 0

    def _created(self, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        response = self.client.post(path, json=body)
        assert response.status_code == status, response.get_json()
        return response.get_json()

    def category(self, name: str = "Garden", parent_id: int | None = None) -> dict[str, Any]:
        return self._created("/categories", {"name": name, "parent_id": parent_id})

    def product(
        self,
        category_id: int | None = None,
        cents: int = 1000,
        currency: str = "EUR",
        stock: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        self._sku += 1
        body = {
            "sku": f"SKU-{self._sku:04d}",
            "name": f"Product {self._sku}",
            "category_id": category_id or self.category()["id"],
            "price": {"cents": cents, "currency": currency},
            **extra,
        }
        product = self._created("/products", body)
        if stock is not None:
            response = self.client.put(f"/inventory/{product['id']}", json={"on_hand": stock})
            assert response.status_code == 200, response.get_json()
        return product

    def customer(
        self, email: str = "Ada@Example.com", name: str = "Ada Lovelace"
    ) -> dict[str, Any]:
        return self._created("/customers", {"email": email, "name": name})

    def order(self, customer_id: int, *lines: tuple[int, int]) -> dict[str, Any]:
        body = {
            "customer_id": customer_id,
            "lines": [{"product_id": p, "quantity": q} for p, q in lines],
        }
        return self._created("/orders", body)

    def stock(self, product_id: int) -> dict[str, Any]:
        response = self.client.get(f"/inventory/{product_id}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()


@pytest.fixture
def shop(client: FlaskClient) -> Shop:
    return Shop(client)


def error_of(response: Any) -> dict[str, Any]:
    """The `error` object of a JSON error response."""
    body = response.get_json()
    assert set(body) == {"error"}, body
    return body["error"]


ErrorOf = Callable[[Any], dict[str, Any]]


@pytest.fixture
def error() -> ErrorOf:
    return error_of
