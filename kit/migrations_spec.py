"""What the manifest says about an app's Alembic environment (no alembic import: loading a
manifest stays cheap). `kit.alembic_runner` reads and runs it."""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VERSION_TABLE = "alembic_version"


class MigrationRefused(ValueError):
    """The kit will not run this history on this database; the message says why and what to do."""


class NoMigrations(MigrationRefused):
    """The app declares no Alembic environment in the manifest."""

    def __init__(self, app: str) -> None:
        super().__init__(
            f"{app} has no Alembic environment in the manifest ([{_section(app)}.migrations] "
            "script_location or ini): the kit never runs a migration it cannot name. For an "
            f"app without Alembic, `kit db baseline {app}` writes an environment whose first "
            "revision is empty and stamps the database with it (nothing in it changes); see "
            "docs/manifest.md, 'Migrations'."
        )


def _section(app: str) -> str:
    return "monolith" if app == "monolith" else f"services.{app}"


@dataclass(frozen=True)
class Migrations:
    """An app's Alembic environment: its script folder and the table holding its revision."""

    script_location: Path
    version_table: str = DEFAULT_VERSION_TABLE
    ini: Path | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.version_table):
            raise ValueError(f"version_table must be an SQL identifier, got {self.version_table!r}")

    @classmethod
    def from_ini(cls, ini: Path, version_table: str = DEFAULT_VERSION_TABLE) -> Migrations:
        """Read `script_location` from an `alembic.ini` (relative to the ini's folder,
        `%(here)s` expanded), as `alembic -c ini` run from that folder would."""
        parser = configparser.ConfigParser(defaults={"here": str(ini.parent)})
        if not parser.read(ini):
            raise ValueError(f"cannot read {ini}")
        try:
            location = parser.get("alembic", "script_location")
        except (configparser.NoSectionError, configparser.NoOptionError):
            raise ValueError(f"{ini} has no [alembic] script_location") from None
        path = Path(location)
        return cls(path if path.is_absolute() else ini.parent / path, version_table, ini)
