"""Common Flask app set-up shared by the monolith and the services."""

from __future__ import annotations

from flask import Flask

from shoplib.errors import register_error_handlers
from shoplib.health import health_blueprint


def configure_json_app(app: Flask) -> None:
    """JSON behaviour both sides must share so responses are byte-comparable."""
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    register_error_handlers(app)
    app.register_blueprint(health_blueprint())
