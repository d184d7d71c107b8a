"""Typed configuration of the customers service (environment first, explicit values win)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shoplib.config import DatabaseConfig, env_database_url_factory

DEFAULT_DATABASE_URL = "sqlite:///var/customers.db"
#: The service's own Alembic history (the shop keeps it in the repository's migrations/).
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations" / "customers"
VERSION_TABLE = "alembic_version_customers"


@dataclass(frozen=True)
class CustomersConfig(DatabaseConfig):
    """Where the customers service's own database lives (`CUSTOMERS_DATABASE_URL`)."""

    database_url: str = field(
        default_factory=env_database_url_factory("CUSTOMERS_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    migrations: Path = MIGRATIONS  # /readyz answers 503 until the database is at its head
    version_table: str = VERSION_TABLE
