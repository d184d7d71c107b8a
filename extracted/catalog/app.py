"""App factory of the catalog service (`gunicorn 'extracted.catalog.app:create_app()'`)."""

from __future__ import annotations

from flask import Flask

from extracted.catalog.config import CatalogConfig
from extracted.catalog.openapi import openapi_document
from extracted.catalog.views import catalog_blueprint
from shoplib.app import configure_json_app
from shoplib.db import Database
from shoplib.openapi import openapi_blueprint
from shoplib.routing import use_bounded_ints


def create_app(config: CatalogConfig | None = None) -> Flask:
    """Build the service; its database schema is managed by `kit db upgrade catalog`."""
    config = config or CatalogConfig()
    app = Flask(__name__)
    app.config["DATABASE_URL"] = config.database_url
    app.config["CATALOG_CONFIG"] = config
    use_bounded_ints(app)
    configure_json_app(app)
    Database(app)
    app.register_blueprint(catalog_blueprint())
    app.register_blueprint(openapi_blueprint(openapi_document))
    return app
