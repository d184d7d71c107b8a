"""App factory of the customers service (`gunicorn 'extracted.customers.app:create_app()'`)."""

from __future__ import annotations

from flask import Flask

from extracted.customers.config import CustomersConfig
from extracted.customers.openapi import openapi_document
from extracted.customers.views import customers_blueprint
from shoplib.app import build_app


def create_app(config: CustomersConfig | None = None) -> Flask:
    """Build the service; its database schema is managed by `kit db upgrade customers`."""
    config = config or CustomersConfig()
    return build_app(
        __name__,
        config.database_url,
        [customers_blueprint()],
        openapi_document,
        {"CUSTOMERS_CONFIG": config},
    )
