"""Common Flask app set-up shared by the monolith and the services."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask

from shoplib.db import Database
from shoplib.errors import register_error_handlers
from shoplib.health import SchemaAtHead, health_blueprint
from shoplib.openapi import openapi_blueprint
from shoplib.routing import use_bounded_ints


def configure_json_app(app: Flask, schema: SchemaAtHead | None = None) -> None:
    """JSON behaviour both sides must share so responses are byte-comparable."""
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    register_error_handlers(app)
    app.register_blueprint(health_blueprint(schema))


def build_app(
    import_name: str,
    database_url: str,
    blueprints: Iterable[Blueprint],
    openapi_document: Callable[[], dict[str, Any]],
    settings: Mapping[str, Any] | None = None,
    schema: SchemaAtHead | None = None,
) -> Flask:
    """The one app shape every shop app has, so monolith and services answer alike.

    Bounded `<int:...>` ids, the shared JSON/error/health set-up, the database extension on
    `database_url`, the app's own blueprints, then `/openapi.json`; `settings` go into
    `app.config` (e.g. the typed config object under the app's own key); with `schema`,
    `/readyz` also requires the database at the app's Alembic head.
    """
    app = Flask(import_name)
    app.config["DATABASE_URL"] = database_url
    app.config.update(settings or {})
    use_bounded_ints(app)
    configure_json_app(app, schema)
    Database(app)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    app.register_blueprint(openapi_blueprint(openapi_document))
    return app
