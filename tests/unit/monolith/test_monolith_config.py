"""Configuration: environment with defaults, bad values refused at start-up."""

from __future__ import annotations

import pytest

from monolith.app import create_app
from monolith.config import DEFAULT_DATABASE_URL, MonolithConfig


def test_config_reads_the_environment_with_a_sqlite_default() -> None:
    assert (
        MonolithConfig.from_env({}).database_url
        == DEFAULT_DATABASE_URL
        == "sqlite:///var/monolith.db"
    )
    env = {"MONOLITH_DATABASE_URL": "postgresql://u@127.0.0.1/shop"}
    assert MonolithConfig.from_env(env).database_url == "postgresql://u@127.0.0.1/shop"


@pytest.mark.parametrize("url", ["", "   ", "not a url"])
def test_bad_database_urls_are_refused_naming_the_field(url: str) -> None:
    with pytest.raises(ValueError, match="database_url"):
        MonolithConfig(database_url=url)


def test_app_has_one_blueprint_per_module_and_openapi(db_url: str) -> None:
    app = create_app(MonolithConfig(database_url=db_url))
    try:
        assert {
            "catalog",
            "customers",
            "inventory",
            "orders",
            "reports",
            "health",
            "openapi",
        } <= set(app.blueprints)
    finally:
        app.extensions["database"].engine.dispose()
