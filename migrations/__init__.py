"""The demo shop's Alembic environments, one folder per database (each its own version table).

The shop is the kit's example: its manifest names these folders like any team names its own
(`[monolith.migrations] script_location = "migrations/monolith"`). `shop_migrations(name)`
gives the same description to the shop's tests and demo, which run it in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kit.migrations_spec import MigrationsSpec

FOLDER = Path(__file__).resolve().parent
DATABASES = ("monolith", "catalog", "customers")


def shop_migrations(name: str) -> MigrationsSpec:
    """The Alembic environment of one shop database (`migrations/<name>`)."""
    from kit.migrations_spec import MigrationsSpec

    if name not in DATABASES:
        raise ValueError(f"unknown shop database {name!r}; known: {', '.join(DATABASES)}")
    return MigrationsSpec(script_location=FOLDER / name, version_table=f"alembic_version_{name}")
