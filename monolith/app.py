"""The monolith's app factory: one blueprint per module, health, and `/openapi.json`.

gunicorn runs it as `gunicorn 'monolith.app:create_app()'`; configuration then comes from the
environment (`MONOLITH_DATABASE_URL`).
"""

from __future__ import annotations

from flask import Flask

from monolith.catalog.views import catalog_blueprint
from monolith.config import MonolithConfig
from monolith.customers.views import customers_blueprint
from monolith.inventory.views import inventory_blueprint
from monolith.openapi import openapi_document
from monolith.orders.views import orders_blueprint
from monolith.reports.views import reports_blueprint
from shoplib.app import build_app

BLUEPRINTS = (
    catalog_blueprint,
    customers_blueprint,
    inventory_blueprint,
    orders_blueprint,
    reports_blueprint,
)


def create_app(config: MonolithConfig | None = None) -> Flask:
    """Build the shop app; `config=None` reads the environment."""
    config = config or MonolithConfig.from_env()
    return build_app(
        "monolith",
        config.database_url,
        [make_blueprint() for make_blueprint in BLUEPRINTS],
        openapi_document,
        {"MONOLITH": config},
    )
