"""What the manifest says about an app's Alembic environment (`[<app>.migrations]`), with no
alembic import, so loading a manifest stays cheap. `kit.alembic_runner` reads and runs it."""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VERSION_TABLE = "alembic_version"


class MigrationRefused(ValueError):
    """The kit will not run this history on this database; the message says why and what to do."""


class NoMigrations(MigrationRefused):
    """The app declares no Alembic environment in the manifest."""

    def __init__(self, app: str) -> None:
        section = "monolith" if app == "monolith" else f"services.{app}"
        super().__init__(
            f"{app} has no Alembic environment in the manifest ([{section}.migrations] "
            "script_location or ini): the kit never runs a migration it cannot name. For an "
            f"app without Alembic, `kit db baseline {app}` writes an environment whose first "
            "revision is empty and stamps the database with it (nothing in it changes); see "
            "docs/manifest.md, 'Migrations'."
        )


@dataclass(frozen=True)
class MigrationsSpec:
    """The app's own Alembic environment: where its revisions live (`script_location`, or the
    `ini` naming it) and which table records the applied one (read directly, without running
    the app's env.py; `schema.table` is allowed)."""

    script_location: Path | None = None
    ini: Path | None = None
    version_table: str = DEFAULT_VERSION_TABLE

    def __post_init__(self) -> None:
        if (self.script_location is None) == (self.ini is None):
            raise ValueError("give exactly one of script_location and ini")

    @property
    def folder(self) -> Path:
        """The script folder; from the ini's `[alembic] script_location` (relative to the
        ini's folder, `%(here)s` expanded) when the manifest names an ini."""
        if self.script_location is not None:
            return self.script_location
        assert self.ini is not None
        parser = configparser.ConfigParser(defaults={"here": str(self.ini.parent)})
        if not parser.read(self.ini):
            raise MigrationRefused(f"cannot read {self.ini}")
        try:
            location = Path(parser.get("alembic", "script_location"))
        except (configparser.NoSectionError, configparser.NoOptionError):
            raise MigrationRefused(f"{self.ini} has no [alembic] script_location") from None
        return location if location.is_absolute() else self.ini.parent / location

    @property
    def table(self) -> tuple[str | None, str]:
        """(schema or None, table name) of the version table."""
        schema, _, name = self.version_table.rpartition(".")
        return schema or None, name
