"""App factory of the catalog service (`gunicorn 'extracted.catalog.app:create_app()'`)."""

from __future__ import annotations

from flask import Flask

from extracted.catalog.config import CatalogConfig
from extracted.catalog.openapi import openapi_document
from extracted.catalog.views import catalog_blueprint
from shoplib.app import build_app
from shoplib.health import SchemaAtHead


def create_app(config: CatalogConfig | None = None) -> Flask:
    """Build the service; `/readyz` is 503 until its database is at its Alembic head."""
    config = config or CatalogConfig()
    return build_app(
        __name__,
        config.database_url,
        [catalog_blueprint()],
        openapi_document,
        {"CATALOG_CONFIG": config},
        SchemaAtHead(config.migrations, config.version_table),
    )
