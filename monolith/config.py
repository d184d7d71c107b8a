"""Monolith configuration: a small typed dataclass read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///var/monolith.db"


@dataclass(frozen=True)
class MonolithConfig:
    """Everything the app factory needs; validated so a typo fails at start-up, not per request.

    `database_url` defaults to `sqlite:///var/monolith.db`, relative to the working directory.
    """

    database_url: str = DEFAULT_DATABASE_URL

    def __post_init__(self) -> None:
        if not self.database_url or not self.database_url.strip():
            raise ValueError("database_url: must not be empty")
        try:
            make_url(self.database_url)
        except ArgumentError as error:
            raise ValueError(f"database_url: not a database URL ({error})") from error

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MonolithConfig:
        """Read `MONOLITH_DATABASE_URL` (default: the SQLite file under `var/`)."""
        source = os.environ if env is None else env
        return cls(database_url=source.get("MONOLITH_DATABASE_URL") or DEFAULT_DATABASE_URL)
