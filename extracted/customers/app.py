"""App factory of the customers service (`gunicorn 'extracted.customers.app:create_app()'`)."""

from __future__ import annotations

from flask import Flask

from extracted.customers.config import CustomersConfig
from extracted.customers.openapi import openapi_document
from extracted.customers.views import customers_blueprint
from shoplib.app import configure_json_app
from shoplib.db import Database
from shoplib.openapi import openapi_blueprint
from shoplib.routing import use_bounded_ints


def create_app(config: CustomersConfig | None = None) -> Flask:
    """Build the service; its database schema is managed by `kit db upgrade customers`."""
    config = config or CustomersConfig()
    app = Flask(__name__)
    app.config["DATABASE_URL"] = config.database_url
    app.config["CUSTOMERS_CONFIG"] = config
    use_bounded_ints(app)
    configure_json_app(app)
    Database(app)
    app.register_blueprint(customers_blueprint())
    app.register_blueprint(openapi_blueprint(openapi_document))
    return app
