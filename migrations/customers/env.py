"""Alembic environment of the customers service's own database (version table of its own).

The URL falls back to `CUSTOMERS_DATABASE_URL` / the service default (see `migrations._env`).
"""

from __future__ import annotations

from extracted.customers.config import CustomersConfig
from extracted.customers.models import Base
from migrations._env import run_migrations

VERSION_TABLE = "alembic_version_customers"

run_migrations(Base.metadata, VERSION_TABLE, lambda: CustomersConfig().database_url)
