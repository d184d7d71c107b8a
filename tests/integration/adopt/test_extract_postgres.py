"""`kit init` + `kit extract` on a PostgreSQL monolith: the scaffolded service's first
revision creates the taken-over tables in the service's own PostgreSQL database (portable
types, the declared key of a keyless table), its identity mapping passes `kit manifest check`,
and `kit db upgrade` of the MONOLITH with that service history is refused."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import inspect, text

from kit.cli import main
from kit.manifest import load_manifest
from kitcore.db import make_engine
from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.integration

APP = """
from flask import Flask, jsonify


def create_app():
    app = Flask(__name__)

    @app.get("/notes")
    def notes():
        return jsonify(items=[])

    return app
"""


def _kit(folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    full = {"KIT_MANIFEST": str(folder / "kit.toml"), **(env or {})}
    return CliRunner().invoke(main, list(args), env=full)


def test_extracted_service_migration_creates_the_tables_on_postgresql(
    tmp_path: Path, pg_url: str, postgres_server: PostgresServer
) -> None:
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL, "
                "price numeric(12, 2), created timestamptz NOT NULL DEFAULT now())"
            )
        )
        conn.execute(text("CREATE TABLE note_tags (note_id int NOT NULL REFERENCES notes(id), "
                          "tag varchar(40) NOT NULL)"))  # fmt: skip
    engine.dispose()
    (tmp_path / "notes_app.py").write_text(APP)
    # the app's interpreter has psycopg2; SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3
    service_url = postgres_server.create_database().replace(
        "postgresql://", "postgresql+psycopg2://"
    )
    try:
        init = _kit(
            tmp_path, "init", "--app", "notes_app:create_app()", "--database-url", pg_url,
            "--cwd", str(tmp_path), "--output", str(tmp_path / "kit.toml"),
        )  # fmt: skip
        assert init.exit_code == 0, init.output
        extract = _kit(
            tmp_path, "extract", "archive", "--tables", "notes,note_tags",
            "--key", "note_tags=note_id,tag", "--endpoints", "GET /notes",
        )  # fmt: skip
        assert extract.exit_code == 0, extract.output
        check = _kit(tmp_path, "manifest", "check", "--structure-only")
        assert check.exit_code == 0, check.output

        env = {"ARCHIVE_DATABASE_URL": service_url}
        upgraded = _kit(tmp_path, "db", "upgrade", "archive", env=env)
        assert upgraded.exit_code == 0, upgraded.output
        service = make_engine(service_url)
        try:
            inspector = inspect(service)
            assert set(inspector.get_table_names()) == {"notes", "note_tags", "alembic_version"}
            assert inspector.get_pk_constraint("note_tags")["constrained_columns"] == [
                "note_id",
                "tag",
            ]
            columns = {c["name"]: c for c in inspector.get_columns("notes")}
            assert str(columns["price"]["type"]) == "NUMERIC(12, 2)"
            with service.begin() as conn:  # the id still counts by itself
                conn.execute(text("INSERT INTO notes (body) VALUES ('x')"))
        finally:
            service.dispose()
        m = load_manifest(tmp_path / "kit.toml", env=env)
        assert [t.key for t in m.services["archive"].mapping().tables] == [
            ("id",),
            ("note_id", "tag"),
        ]
    finally:
        postgres_server.drop_database(unquote(urlsplit(service_url).path.lstrip("/")))
