"""Typed configuration of the catalog service (environment first, explicit values win)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///var/catalog.db"


def _env_database_url() -> str:
    return os.environ.get("CATALOG_DATABASE_URL") or DEFAULT_DATABASE_URL


@dataclass(frozen=True)
class CatalogConfig:
    """Where the catalog's own database lives; validated when built so typos fail early."""

    database_url: str = field(default_factory=_env_database_url)

    def __post_init__(self) -> None:
        if not isinstance(self.database_url, str) or not self.database_url:
            raise ValueError("database_url must be a non-empty SQLAlchemy URL")
        try:
            make_url(self.database_url)
        except ArgumentError as error:
            raise ValueError(f"database_url is not a valid SQLAlchemy URL: {error}") from None
