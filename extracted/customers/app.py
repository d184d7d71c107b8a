"""App factory of the customers service (`gunicorn 'extracted.customers.app:create_app()'`)."""

from __future__ import annotations

from flask import Flask

from extracted.customers.config import CustomersConfig
from extracted.customers.openapi import openapi_document
from extracted.customers.views import customers_blueprint
from shoplib.app import build_app
from shoplib.health import SchemaAtHead


def create_app(config: CustomersConfig | None = None) -> Flask:
    """Build the service; `/readyz` is 503 until its database is at its Alembic head."""
    config = config or CustomersConfig()
    return build_app(
        __name__,
        config.database_url,
        [customers_blueprint()],
        openapi_document,
        {"CUSTOMERS_CONFIG": config},
        SchemaAtHead(config.migrations, config.version_table),
    )
