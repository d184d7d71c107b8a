"""An app's own Alembic environment, driven by the kit without importing the app.

Every app (the monolith, each service) names its Alembic environment in the manifest
(`[<app>.migrations]`: `script_location` or `ini`, and `version_table`). Reading it is
kit-side: `ScriptDirectory` only parses the version files, and the applied revision is one row
of the version table. Running it is not: `env.py` imports the app's models, so upgrades and
downgrades run in the APP's interpreter (`kit/appside/alembic_env.py` through
`kit.appenv.run_app_script`), or in-process when the caller passes no runtime (tests of an
app whose code the kit's environment can import).

Before an upgrade the kit checks that the history belongs to the database
(`check_upgradable`): a database whose applied revision is not in the history, or a non-empty
database without a version table holding tables the history would create, is refused: the
kit never creates tables that do not belong in someone's database.

Public API:
    (the environment: kit.migrations_spec.MigrationsSpec, from the manifest)
    heads(mig) / history(mig) / tables_created(mig)
    current(mig, url) -> str | None
    check_upgradable(mig, url)                      # MigrationRefused naming both sides
    upgrade(mig, url, revision="head", runtime=None) / downgrade(mig, url, revision, runtime)
    stamp(mig, url, revision)
"""

from __future__ import annotations

import re
from argparse import Namespace
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from kit.migrations_spec import MigrationRefused, MigrationsSpec
from kitcore.db import make_engine

APPSIDE_SCRIPT = "alembic_env.py"
_CREATE_TABLE = re.compile(r"""create_table\(\s*['"]([\w.]+)['"]""")


def script_directory(mig: MigrationsSpec) -> ScriptDirectory:
    """The parsed history (reads version files; never runs env.py)."""
    if not (mig.folder / "env.py").is_file():
        raise MigrationRefused(f"{mig.folder} is not an Alembic folder (no env.py)")
    return ScriptDirectory.from_config(alembic_config(mig))  # quiet: callers print


def heads(mig: MigrationsSpec) -> list[str]:
    return list(script_directory(mig).get_heads())


def history(mig: MigrationsSpec) -> list[Script]:
    """Every revision, base first."""
    return list(reversed(list(script_directory(mig).walk_revisions())))


def tables_created(mig: MigrationsSpec) -> set[str]:
    """Tables the history's version files create (`op.create_table("name", ...)`), found in
    their source: enough to tell a database that already holds them without running env.py."""
    names: set[str] = set()
    for script in history(mig):
        path = Path(script.path)
        if path.is_file():
            names.update(_CREATE_TABLE.findall(path.read_text(errors="replace")))
    return names


def _ensure_sqlite_folder(url: str) -> None:
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        if not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)


def version_opts(mig: MigrationsSpec) -> dict[str, str | None]:
    """Where Alembic reads and writes the applied revision (`schema.table` allowed)."""
    schema, table = mig.table
    return {"version_table": table, "version_table_schema": schema}


@contextmanager
def _version_context(mig: MigrationsSpec, url: str) -> Iterator[MigrationContext]:
    """A MigrationContext on the app's version table, in one transaction (committed)."""
    _ensure_sqlite_folder(url)
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            yield MigrationContext.configure(connection, opts=version_opts(mig))
    finally:
        engine.dispose()


def _read_database(mig: MigrationsSpec, url: str) -> tuple[str | None, set[str]]:
    """(applied revision, table names) of the database at `url`."""
    with _version_context(mig, url) as context:
        tables = set(inspect(context.connection).get_table_names())
        return context.get_current_revision(), tables


def current(mig: MigrationsSpec, url: str) -> str | None:
    """The revision applied to `url` (None when never migrated or fully downgraded)."""
    return _read_database(mig, url)[0]


def _foreign_revision(script: ScriptDirectory, revision: str) -> bool:
    try:
        script.get_revision(revision)
    except CommandError:
        return True
    return False


#: Alembic's default version table: a revision there names the history the database was made
#: by. Other version tables (`alembic_version_<name>`) are how several environments share one
#: database on purpose, so their revisions are none of this environment's business.
DEFAULT_VERSION_TABLE = "alembic_version"


def _other_version_tables(mig: MigrationsSpec, url: str, tables: set[str]) -> dict[str, str]:
    """{table: revision} of the database's default Alembic version table when the manifest
    names another one: the trace the database's own history left there."""
    others = [t for t in (DEFAULT_VERSION_TABLE,) if t in tables and t != mig.table[1]]
    found: dict[str, str] = {}
    for table in others:
        spec = MigrationsSpec(script_location=mig.folder, version_table=table)
        revision = current(spec, url)
        if revision is not None:
            found[table] = revision
    return found


def check_upgradable(mig: MigrationsSpec, url: str) -> None:
    """Refuse a history that does not belong to this database (MigrationRefused), before any
    change: an applied revision the history does not know (in the manifest's version table,
    or, when that one is empty, in Alembic's default `alembic_version`), or tables the history
    would create in a database that has no version table."""
    applied, tables = _read_database(mig, url)
    where = _redact(url)
    script = script_directory(mig)
    if applied is not None:
        if _foreign_revision(script, applied):
            raise MigrationRefused(
                f"database {where} is at revision {applied!r} ({mig.version_table}), which is "
                f"not in the history of {mig.folder}: it belongs to another Alembic "
                "environment; check the manifest's migrations section and database_url"
            )
        return
    for table, revision in _other_version_tables(mig, url, tables).items():
        if _foreign_revision(script, revision):
            raise MigrationRefused(
                f"database {where} has no revision in {mig.version_table} but is at revision "
                f"{revision!r} in {table}, which is not in the history of {mig.folder}: it "
                "belongs to another Alembic environment; is version_table in the manifest's "
                "migrations section the one its env.py uses?"
            )
    clash = sorted((tables_created(mig) & tables) - {mig.table[1]})
    if clash:
        raise MigrationRefused(
            f"database {where} has no {mig.version_table} table but already holds table(s) "
            f"{', '.join(clash)} that the history of {mig.folder} would create: it is "
            "not this environment's database. If it is (created without Alembic), stamp it "
            "with the revision it matches (`kit db stamp <app> REVISION`)"
        )


def _redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def alembic_config(mig: MigrationsSpec, url: str | None = None, *, quiet: bool = True) -> Config:
    """A Config for the environment (its ini when it has one) carrying `url` both as the
    `url` attribute and as `sqlalchemy.url`, the two places an env.py looks."""
    opts = Namespace(quiet=quiet)
    config = Config(str(mig.ini), cmd_opts=opts) if mig.ini else Config(cmd_opts=opts)
    config.set_main_option("script_location", str(mig.folder))
    if url is not None:
        config.attributes["url"] = url
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["version_table"] = mig.table[1]
    return config


URL_VARIABLE = "KIT_ALEMBIC_URL"  # the URL reaches the app-side script by environment, never argv


def run_appside(
    mig: MigrationsSpec, runtime: Any, verb: str, url: str, revision: str = "head"
) -> Any:
    """Run `verb` of `kit/appside/alembic_env.py` in the app's interpreter (`runtime`, an
    `kit.appenv.AppRuntime`); its JSON answer."""
    import dataclasses
    import json

    from kit.appenv import run_app_script

    request = {
        "verb": verb,
        "script_location": str(mig.folder),
        "ini": str(mig.ini) if mig.ini else None,
        "version_opts": version_opts(mig),
        "revision": revision,
    }
    rt = dataclasses.replace(runtime, env={**runtime.env, URL_VARIABLE: url})
    return run_app_script(rt, APPSIDE_SCRIPT, json.dumps(request))


def _run(mig: MigrationsSpec, verb: str, url: str, revision: str, runtime: Any) -> None:
    _ensure_sqlite_folder(url)
    if runtime is None:
        move = command.upgrade if verb == "upgrade" else command.downgrade
        move(alembic_config(mig, url), revision)
        return
    run_appside(mig, runtime, verb, url, revision)


def upgrade(mig: MigrationsSpec, url: str, revision: str = "head", runtime: Any = None) -> None:
    """Check the history belongs to the database, then upgrade it (in the app's interpreter
    when `runtime`, an `kit.appenv.AppRuntime`, is given)."""
    check_upgradable(mig, url)
    _run(mig, "upgrade", url, revision, runtime)


def downgrade(mig: MigrationsSpec, url: str, revision: str = "base", runtime: Any = None) -> None:
    _run(mig, "downgrade", url, revision, runtime)


def stamp(mig: MigrationsSpec, url: str, revision: str = "head") -> str | None:
    """Record `revision` as applied without running anything (kit-side: no env.py)."""
    script = script_directory(mig)
    with _version_context(mig, url) as context:
        context.stamp(script, revision)
        return context.get_current_revision()


def runtime_env(env: Mapping[str, str], old_url: str, new_url: str) -> dict[str, str]:
    """The app's environment with its database URL swapped (a `--url` override)."""
    return {k: (new_url if v == old_url else v) for k, v in env.items()}
