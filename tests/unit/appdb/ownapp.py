"""A monolith that is not the shop, for the `kit db` / `kit init` / `kit extract` tests: its
own Alembic folder (own version table), a manifest in a temporary folder, SQLite files."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect

from kit.scaffold import alembic_files, write_new_files
from kitcore.db import make_engine

NOTES_UP = """    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("body", sa.Text(), nullable=False),
    )
    op.create_table(
        "tags",
        sa.Column("note_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(40), nullable=False),
    )"""
NOTES_DOWN = """    op.drop_table("tags")
    op.drop_table("notes")"""

MANIFEST = """# a team's manifest: comments stay
[kit]
var_dir = "var"

[monolith]
url = "http://127.0.0.1:18000"
database_url = "sqlite:///var/notes.db"
app = "notes_app:create_app()"
database_env = "DATABASE_URL"
{migrations}
[services.archive]
url = "http://127.0.0.1:18001"
database_url = "sqlite:///var/archive.db"
app = "archive_app:create_app()"
mapping = "archive-mapping.toml"
tables = ["notes"]
endpoints = [{{ methods = ["GET"], path = "/notes", kind = "read" }}]
"""

OWN_MIGRATIONS = """
[monolith.migrations]
script_location = "notes_migrations"
version_table = "notes_version"
"""


def write_notes_alembic(folder: Path) -> Path:
    """The app's own history: one revision creating `notes` and `tags` (no key)."""
    write_new_files(
        alembic_files(
            folder,
            app="notes",
            how="test",
            database_env="DATABASE_URL",
            revision="n0001_notes",
            message="notes and tags",
            upgrade=NOTES_UP,
            downgrade=NOTES_DOWN,
            version_table="notes_version",
        )
    )
    return folder


def write_app_manifest(folder: Path, *, own_migrations: bool = True) -> Path:
    """kit.toml for the notes app (with or without its Alembic environment)."""
    if own_migrations:
        write_notes_alembic(folder / "notes_migrations")
    (folder / "var").mkdir(exist_ok=True)
    path = folder / "kit.toml"
    path.write_text(MANIFEST.format(migrations=OWN_MIGRATIONS if own_migrations else ""))
    return path


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
