"""Monolith configuration: a small typed dataclass read from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shoplib.config import DatabaseConfig, env_database_url

DEFAULT_DATABASE_URL = "sqlite:///var/monolith.db"


@dataclass(frozen=True)
class MonolithConfig(DatabaseConfig):
    """Everything the app factory needs; validated so a typo fails at start-up, not per request.

    `database_url` defaults to `sqlite:///var/monolith.db`, relative to the working directory.
    """

    database_url: str = DEFAULT_DATABASE_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MonolithConfig:
        """Read `MONOLITH_DATABASE_URL` (default: the SQLite file under `var/`)."""
        return cls(env_database_url("MONOLITH_DATABASE_URL", DEFAULT_DATABASE_URL, env))
