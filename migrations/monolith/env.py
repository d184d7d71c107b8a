"""Alembic environment for the monolith database.

The URL is passed programmatically (`config.attributes["url"]`, see `kit.alembic_runner`);
`sqlalchemy.url` in a Config is accepted as a fallback. Nothing here hard-codes a database.
"""

from __future__ import annotations

from migrations._env import run_migrations
from monolith.schema import metadata

VERSION_TABLE = "alembic_version_monolith"

run_migrations(metadata(), VERSION_TABLE)
