"""`kit db upgrade|downgrade|current <database>`: Alembic for every folder of `migrations/`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from kit import alembic_runner

T = TypeVar("T")


def _run(action: Callable[[], T]) -> T:
    """Turn the failures a user can cause into a clear message and a non-zero exit."""
    try:
        return action()
    except alembic_runner.UnknownDatabase as error:
        raise click.ClickException(str(error)) from error
    except (SQLAlchemyError, OSError) as error:
        raise click.ClickException(f"database error: {error}") from error
    except Exception as error:  # alembic reports bad revisions with its own CommandError
        if type(error).__module__.startswith("alembic"):
            raise click.ClickException(str(error)) from error
        raise


def _url(database: str, url: str | None) -> str:
    return url or alembic_runner.default_url(database)


def _migrate(
    move: Callable[[str, str, str], None], database: str, url: str | None, revision: str, verb: str
) -> None:
    """Move DATABASE to `revision` (up or down), then say where it now is."""
    target = _url(database, url)
    _run(lambda: move(database, target, revision))
    now = _run(lambda: alembic_runner.current(database, target))
    click.echo(f"{database}: {verb} to {now or '(base)'}")


_DATABASE = click.argument("database")
_URL = click.option(
    "--url", help="Database URL (default: $<NAME>_DATABASE_URL, else sqlite:///var/<name>.db)."
)


@click.group("db")
def cli() -> None:
    """Schema migrations, one Alembic environment per database in migrations/."""


@cli.command("upgrade")
@_DATABASE
@_URL
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def upgrade(database: str, url: str | None, revision: str) -> None:
    """Upgrade DATABASE (monolith, catalog, customers, ...) to REVISION."""
    _migrate(alembic_runner.upgrade, database, url, revision, "upgraded")


@cli.command("downgrade")
@_DATABASE
@_URL
@click.option(
    "--revision", default="-1", show_default=True, help="Target revision ('base' drops all)."
)
def downgrade(database: str, url: str | None, revision: str) -> None:
    """Downgrade DATABASE to REVISION (default: one step back)."""
    _migrate(alembic_runner.downgrade, database, url, revision, "downgraded")


@cli.command("current")
@_DATABASE
@_URL
def current(database: str, url: str | None) -> None:
    """Show the revision applied to DATABASE and the newest one available."""
    target = _url(database, url)
    revision = _run(lambda: alembic_runner.current(database, target))
    heads = _run(lambda: alembic_runner.heads(database))
    state = "up to date" if revision in heads else "behind"
    click.echo(f"{database}: {revision or '(base)'} (head: {', '.join(heads)}; {state})")
