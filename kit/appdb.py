"""One app's database as the manifest describes it: its URL, its Alembic environment and the
interpreter its env.py runs in. `kit db`, the `schema` step and `retire` all go through here,
so they agree on which history belongs to which database."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kit import alembic_runner
from kit.manifest import Manifest, ManifestError, MonolithSpec, Problem, ServiceSpec
from kit.migrations_spec import MigrationsSpec, NoMigrations


def app_spec(m: Manifest, name: str) -> MonolithSpec | ServiceSpec:
    """`monolith` or a service of the manifest (ManifestError naming the known ones)."""
    if name == "monolith":
        return m.monolith
    if name in m.services:
        return m.services[name]
    known = ", ".join(["monolith", *sorted(m.services)])
    raise ManifestError([Problem("services", f"unknown app {name!r}; known: {known}")], m.path)


@dataclass(frozen=True)
class AppDatabase:
    """The database of app `name` with the history that belongs to it."""

    name: str
    url: str
    migrations: MigrationsSpec
    runtime: Any = None  # kit.appenv.AppRuntime: env.py runs in the app's interpreter

    def upgrade(self, revision: str = "head") -> str | None:
        alembic_runner.upgrade(self.migrations, self.url, revision, self.runtime)
        return self.current()

    def downgrade(self, revision: str = "base") -> str | None:
        alembic_runner.downgrade(self.migrations, self.url, revision, self.runtime)
        return self.current()

    def current(self) -> str | None:
        return alembic_runner.current(self.migrations, self.url)

    def heads(self) -> list[str]:
        return alembic_runner.heads(self.migrations)

    def at_head(self) -> bool:
        return self.current() in self.heads()


def app_database(m: Manifest, name: str, url: str | None = None) -> AppDatabase:
    """The app's database (at `url` instead of the manifest's when given); NoMigrations when
    the manifest names no Alembic environment for it."""
    spec = app_spec(m, name)
    if spec.migrations is None:
        raise NoMigrations(name)
    runtime = getattr(spec, "runtime", None)
    if url and runtime is not None:
        env = alembic_runner.runtime_env(runtime.env, spec.database_url, url)
        runtime = dataclasses.replace(runtime, env=env)
    return AppDatabase(name, url or spec.database_url, spec.migrations, runtime)
