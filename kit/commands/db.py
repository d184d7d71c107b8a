"""`kit db upgrade|downgrade|current|history|stamp|baseline <app>`: each app's own Alembic.

APP is `monolith` or a service name; the manifest's `[<app>.migrations]` names the app's
Alembic environment and version table, and `database_url` the database (`--url` overrides).
Upgrades and downgrades run env.py in the app's interpreter; reading the revision and the
history is done by the kit. `upgrade` refuses a database that belongs to another history.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from kit import alembic_runner
from kit.appdb import AppDatabase, app_database, app_spec
from kit.manifest import ManifestError, load_manifest
from kit.migrations_spec import MigrationRefused

T = TypeVar("T")


def _run(action: Callable[[], T]) -> T:
    """Turn the failures a user can cause into a clear message and a non-zero exit."""
    try:
        return action()
    except (ManifestError, MigrationRefused) as error:
        raise click.ClickException(str(error)) from error
    except (SQLAlchemyError, OSError) as error:
        raise click.ClickException(f"database error: {error}") from error
    except Exception as error:  # alembic's CommandError, the app-side script's failure
        if type(error).__module__.startswith(("alembic", "kit.appenv")):
            raise click.ClickException(str(error)) from error
        raise


def _db(app: str, url: str | None) -> AppDatabase:
    return _run(lambda: app_database(load_manifest(), app, url))


_APP = click.argument("app")
_URL = click.option("--url", help="Database URL (default: the app's database_url).")


@click.group("db")
def cli() -> None:
    """Schema migrations: each app's own Alembic environment, as the manifest names it."""


@cli.command("upgrade")
@_APP
@_URL
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def upgrade(app: str, url: str | None, revision: str) -> None:
    """Upgrade APP's database (monolith or a service) to REVISION.

    Refused, with nothing changed, when the database's applied revision is not in the app's
    history, or when it has no version table but holds tables the history would create."""
    db = _db(app, url)
    now = _run(lambda: db.upgrade(revision))
    click.echo(f"{app}: upgraded to {now or '(base)'}")


@cli.command("downgrade")
@_APP
@_URL
@click.option(
    "--revision", default="-1", show_default=True, help="Target revision ('base' drops all)."
)
def downgrade(app: str, url: str | None, revision: str) -> None:
    """Downgrade APP's database to REVISION (default: one step back)."""
    db = _db(app, url)
    now = _run(lambda: db.downgrade(revision))
    click.echo(f"{app}: downgraded to {now or '(base)'}")


@cli.command("current")
@_APP
@_URL
def current(app: str, url: str | None) -> None:
    """Show the revision applied to APP's database and the newest one available."""
    db = _db(app, url)
    revision = _run(db.current)
    heads = _run(db.heads)
    state = "up to date" if revision in heads else "behind"
    click.echo(f"{app}: {revision or '(base)'} (head: {', '.join(heads)}; {state})")


@cli.command("history")
@_APP
def history(app: str) -> None:
    """List APP's revisions, base first (read from the version files, env.py not run)."""
    db = _db(app, None)
    for script in _run(lambda: alembic_runner.history(db.migrations)):
        down = script.down_revision
        parent = ", ".join(down) if isinstance(down, tuple) else down or "(base)"
        click.echo(f"{script.revision}  <- {parent}  {script.doc or ''}".rstrip())


@cli.command("stamp")
@_APP
@click.argument("revision")
@_URL
def stamp(app: str, revision: str, url: str | None) -> None:
    """Record REVISION as applied to APP's database without running anything (for a
    database created without Alembic that already matches REVISION)."""
    db = _db(app, url)
    now = _run(lambda: alembic_runner.stamp(db.migrations, db.url, revision))
    click.echo(f"{app}: stamped {now or '(base)'}")


@cli.command("baseline")
@_APP
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the Alembic environment (default: <app cwd>/migrations).",
)
@_URL
def baseline(app: str, folder: Path | None, url: str | None) -> None:
    """Give an app without Alembic a history: write an Alembic environment whose first
    revision is empty, stamp the database with it (no table changes), and add
    `[<app>.migrations]` to the manifest. Refuses to overwrite any existing file."""
    from kit.scaffold import ScaffoldError, append_to_manifest, write_baseline

    m = _run(load_manifest)
    spec = _run(lambda: app_spec(m, app))
    if spec.migrations is not None:
        raise click.ClickException(
            f"{app} already names its Alembic environment ({spec.migrations.folder})"
        )
    target = (
        folder.resolve() if folder else Path(getattr(spec, "cwd", None) or m.root) / "migrations"
    )
    try:
        mig, text = write_baseline(target, m.root, app, _database_env(spec, app))
        now = _run(lambda: alembic_runner.stamp(mig, url or spec.database_url, "head"))
        append_to_manifest(m.path or m.root / "kit.toml", text)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{app}: Alembic environment written to {target}, database stamped {now}")
    click.echo(f"added to {m.path}:\n{text}")


def _database_env(spec: object, app: str) -> str:
    """The variable carrying the app's database URL (manifest `database_env`)."""
    return str(getattr(spec, "database_env", None) or f"{app.upper()}_DATABASE_URL")
