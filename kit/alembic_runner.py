"""Reusable Alembic plumbing: one environment per folder of `migrations/`, driven from code.

Every database (`monolith`, `catalog`, `customers`, ...) has its own folder
`migrations/<name>/` holding `env.py`, `script.py.mako` and `versions/`, and its own version
table `alembic_version_<name>`. The URL is always passed programmatically (no alembic.ini, no
URL in the repo): `env.py` reads it from `config.attributes["url"]`.

Public API:
    known_databases() -> list[str]
    migrations_root() -> Path
    default_url(name, env=None) -> str             # <NAME>_DATABASE_URL or sqlite:///var/<name>.db
    version_table(name) -> str                      # alembic_version_<name>
    alembic_config(name, url) -> alembic.config.Config
    upgrade(name, url, revision="head") / downgrade(name, url, revision="base")
    current(name, url) -> str | None                # the applied revision, None if none
    heads(name) -> list[str]
Unknown names raise UnknownDatabase (a ValueError) listing the known ones.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from kitcore.db import make_engine


class UnknownDatabase(ValueError):
    """A database name with no folder under `migrations/`."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown database {name!r}; known databases: {', '.join(known) or '(none)'}"
        )
        self.name = name
        self.known = known


def migrations_root() -> Path:
    """The `migrations/` folder next to the `kit` package.

    In the repository (and an editable install) that is the repository's folder; in a
    regular install `kit` and `migrations` are both top-level packages of site-packages.
    """
    return Path(__file__).resolve().parent.parent / "migrations"


def known_databases(root: Path | None = None) -> list[str]:
    """Names of every folder in `migrations/` (or `root`) that holds an Alembic `env.py`."""
    base = root if root is not None else migrations_root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "env.py").is_file())


def script_location(name: str, root: Path | None = None) -> Path:
    known = known_databases(root)
    if name not in known:
        raise UnknownDatabase(name, known)
    return (root if root is not None else migrations_root()) / name


def version_table(name: str) -> str:
    return f"alembic_version_{name}"


def default_url(name: str, env: Mapping[str, str] | None = None) -> str:
    """`<NAME>_DATABASE_URL` from the environment, else `sqlite:///var/<name>.db`."""
    source = os.environ if env is None else env
    return source.get(f"{name.upper()}_DATABASE_URL") or f"sqlite:///var/{name}.db"


def _ensure_sqlite_folder(url: str) -> None:
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        if not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)


def alembic_config(
    name: str, url: str | None = None, *, root: Path | None = None, quiet: bool = False
) -> Config:
    """An Alembic Config for `migrations/<name>` (or `root/<name>`) and `url`, built without
    any ini file; `quiet` keeps Alembic's commands from printing."""
    config = Config(cmd_opts=Namespace(quiet=True)) if quiet else Config()
    config.set_main_option("script_location", str(script_location(name, root)))
    if url is not None:
        config.attributes["url"] = url
    config.attributes["version_table"] = version_table(name)
    return config


def upgrade(name: str, url: str, revision: str = "head") -> None:
    _ensure_sqlite_folder(url)
    command.upgrade(alembic_config(name, url), revision)


def downgrade(name: str, url: str, revision: str = "base") -> None:
    _ensure_sqlite_folder(url)
    command.downgrade(alembic_config(name, url), revision)


def heads(name: str) -> list[str]:
    config = alembic_config(name, "sqlite://")
    return list(ScriptDirectory.from_config(config).get_heads())


def current(name: str, url: str) -> str | None:
    """The revision applied to `url` (None when never migrated or fully downgraded)."""
    script_location(name)  # validate the name first
    _ensure_sqlite_folder(url)
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": version_table(name)}
            )
            return context.get_current_revision()
    finally:
        engine.dispose()
