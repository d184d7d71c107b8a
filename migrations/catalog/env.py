"""Alembic environment of the catalog service's own database (version table of its own).

The URL falls back to `CATALOG_DATABASE_URL` / the service default (see `migrations._env`).
"""

from __future__ import annotations

from extracted.catalog.config import CatalogConfig
from extracted.catalog.models import Base
from migrations._env import run_migrations

VERSION_TABLE = "alembic_version_catalog"

run_migrations(Base.metadata, VERSION_TABLE, lambda: CatalogConfig().database_url)
