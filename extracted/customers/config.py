"""Typed configuration of the customers service (environment first, explicit values win)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoplib.config import DatabaseConfig, env_database_url_factory

DEFAULT_DATABASE_URL = "sqlite:///var/customers.db"


@dataclass(frozen=True)
class CustomersConfig(DatabaseConfig):
    """Where the customers service's own database lives (`CUSTOMERS_DATABASE_URL`)."""

    database_url: str = field(
        default_factory=env_database_url_factory("CUSTOMERS_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
