"""Typed configuration of the catalog service (environment first, explicit values win)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoplib.config import DatabaseConfig, env_database_url_factory

DEFAULT_DATABASE_URL = "sqlite:///var/catalog.db"


@dataclass(frozen=True)
class CatalogConfig(DatabaseConfig):
    """Where the catalog's own database lives (`CATALOG_DATABASE_URL`); validated when built."""

    database_url: str = field(
        default_factory=env_database_url_factory("CATALOG_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
