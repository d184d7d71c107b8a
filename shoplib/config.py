"""The typed configuration every app of the shop shares: where its database lives.

The monolith and each extracted service subclass `DatabaseConfig` only to name their own
default (and, for a service, the environment variable read when no URL is given).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def env_database_url(variable: str, default: str, env: Mapping[str, str] | None = None) -> str:
    """`variable` from the environment (or `env`), else `default`: environment first."""
    source = os.environ if env is None else env
    return source.get(variable) or default


def env_database_url_factory(variable: str, default: str) -> Callable[[], str]:
    """A dataclass `default_factory` reading `variable` when the config is built, not imported."""
    return lambda: env_database_url(variable, default)


def check_database_url(url: object) -> None:
    """Refuse an empty or unparsable URL with a ValueError naming the field, so typos fail early."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("database_url: must be a non-empty SQLAlchemy URL")
    try:
        make_url(url)
    except ArgumentError as error:
        raise ValueError(f"database_url: not a valid SQLAlchemy URL ({error})") from None


@dataclass(frozen=True)
class DatabaseConfig:
    """An app's database URL, validated when built (subclasses give the default)."""

    database_url: str

    def __post_init__(self) -> None:
        check_database_url(self.database_url)
