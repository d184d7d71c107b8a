"""Fixtures for the extracted services: each app on a fresh, Alembic-migrated SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.contract.harness import migrate, service_app


def _app(service: str, tmp_path: Path) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path / f'{service}.db'}"
    migrate(service, url)
    app = service_app(service, url)
    yield app
    app.extensions["database"].engine.dispose()


@pytest.fixture
def catalog_app(tmp_path: Path) -> Iterator[Flask]:
    yield from _app("catalog", tmp_path)


@pytest.fixture
def customers_app(tmp_path: Path) -> Iterator[Flask]:
    yield from _app("customers", tmp_path)


@pytest.fixture
def catalog(catalog_app: Flask) -> FlaskClient:
    return catalog_app.test_client()


@pytest.fixture
def customers(customers_app: Flask) -> FlaskClient:
    return customers_app.test_client()
