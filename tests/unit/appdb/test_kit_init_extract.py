"""`kit init` reads a monolith it has never seen (url_map in the app's interpreter, tables by
reflection) and `kit extract` scaffolds a service from it; neither overwrites a file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from kit.cli import main
from kit.manifest import load_manifest
from kitcore.db import make_engine
from tests.unit.appdb.ownapp import table_names

NOTES_APP = """
from flask import Blueprint, Flask, jsonify

notes = Blueprint("notes", __name__)
admin = Blueprint("admin", __name__)


@notes.get("/notes")
def list_notes():
    return jsonify(items=[])


@notes.post("/notes")
def create_note():
    return jsonify(id=1), 201


@notes.get("/notes/<int:note_id>")
def get_note(note_id):
    return jsonify(id=note_id)


@admin.get("/admin/stats")
def stats():
    return jsonify(notes=0)


def create_app():
    app = Flask(__name__)
    app.register_blueprint(notes)
    app.register_blueprint(admin)
    return app
"""

OPENAPI = {
    "openapi": "3.0.0",
    "info": {"title": "notes", "version": "1"},
    "paths": {
        "/notes": {"get": {"tags": ["notes"]}, "post": {"tags": ["notes"]}},
        "/notes/{note_id}": {"get": {"tags": ["notes"]}, "delete": {"tags": ["notes"]}},
    },
}


@pytest.fixture
def monolith(tmp_path: Path) -> tuple[Path, str]:
    """A throwaway Flask app in its own folder, and its SQLite database."""
    (tmp_path / "notes_app.py").write_text(NOTES_APP)
    url = f"sqlite:///{tmp_path / 'notes.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(200) NOT NULL)")
        )
        conn.execute(text("CREATE TABLE tags (note_id INTEGER NOT NULL, tag VARCHAR(40) NOT NULL)"))
        conn.execute(text("CREATE INDEX ix_tags_tag ON tags (tag)"))
        conn.execute(text("INSERT INTO notes VALUES (1, 'hello')"))
    engine.dispose()
    return tmp_path, url


def _kit(folder: Path, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"KIT_MANIFEST": str(folder / "kit.toml")})


def _init(folder: Path, url: str) -> Result:
    return _kit(
        folder,
        "init",
        "--app",
        "notes_app:create_app()",
        "--database-url",
        url,
        "--cwd",
        str(folder),
        "--output",
        str(folder / "kit.toml"),
    )


def test_init_writes_the_endpoint_inventory_by_blueprint_and_the_tables(
    monolith: tuple[Path, str],
) -> None:
    folder, url = monolith
    result = _init(folder, url)
    assert result.exit_code == 0, result.output
    assert "4 endpoint(s) in 2 group(s), 2 table(s); no primary key: tags" in result.output
    manifest = (folder / "kit.toml").read_text()
    assert 'app = "notes_app:create_app()"' in manifest and 'cwd = "."' in manifest
    notes = manifest.split("# notes:")[1].split("# admin")[0]
    assert "#   GET    /notes/<int:note_id>" in notes and "POST   /notes" in notes
    assert '#   { methods = ["POST"], path = "/notes", kind = "write" },' in notes
    assert "# [services.notes]" in notes
    assert "# admin:" in manifest and "/admin/stats" in manifest
    assert "#   notes  (id)" in manifest
    assert "tags   NO PRIMARY KEY: declare the key" in manifest
    m = load_manifest(folder / "kit.toml")  # valid as it is: no service yet
    assert m.monolith.app == "notes_app:create_app()" and not m.services


def test_init_reads_an_openapi_document_instead_of_the_code(monolith: tuple[Path, str]) -> None:
    folder, url = monolith
    (folder / "openapi.json").write_text(json.dumps(OPENAPI))
    result = _kit(
        folder,
        "init",
        "--openapi",
        str(folder / "openapi.json"),
        "--database-url",
        url,
        "--output",
        str(folder / "kit.toml"),
    )
    assert result.exit_code == 0, result.output
    manifest = (folder / "kit.toml").read_text()
    assert "#   DELETE /notes/<note_id>" in manifest and "external = true" in manifest
    assert load_manifest(folder / "kit.toml").monolith.external


def test_init_never_overwrites_and_names_an_app_it_cannot_import(
    monolith: tuple[Path, str],
) -> None:
    folder, url = monolith
    (folder / "kit.toml").write_text("# mine\n")
    again = _init(folder, url)
    assert again.exit_code == 1 and "refusing to overwrite" in again.output
    assert (folder / "kit.toml").read_text() == "# mine\n"
    (folder / "kit.toml").unlink()
    broken = _kit(
        folder, "init", "--app", "no_such_app:create_app()", "--database-url", url,
        "--cwd", str(folder), "--output", str(folder / "kit.toml"),
    )  # fmt: skip
    assert broken.exit_code == 1 and "no_such_app" in broken.output
    assert not (folder / "kit.toml").exists()


def _extract(folder: Path, *extra: str) -> Result:
    return _kit(
        folder,
        "extract",
        "archive",
        "--tables",
        "notes,tags",
        "--endpoints",
        "GET /notes,GET /notes/<int:note_id>,POST /notes",
        *extra,
    )


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"scaffolded_{id(path)}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_extract_scaffolds_a_service_whose_migration_creates_the_taken_over_tables(
    monolith: tuple[Path, str],
) -> None:
    folder, url = monolith
    assert _init(folder, url).exit_code == 0
    before = (folder / "kit.toml").read_text()
    refused = _extract(folder)
    assert refused.exit_code == 1 and "'tags' has no primary key" in refused.output
    assert (folder / "kit.toml").read_text() == before and not (folder / "services").exists()

    done = _extract(folder, "--key", "tags=note_id,tag")
    assert done.exit_code == 0, done.output
    after = (folder / "kit.toml").read_text()
    assert after.startswith(before)  # appended: the inventory and comments stay
    service = folder / "services" / "archive"
    for name in ("archive_service.py", "mapping.toml", "alembic.ini", "migrations/env.py"):
        assert (service / name).is_file(), name
    m = load_manifest(folder / "kit.toml")
    s = m.services["archive"]
    assert [e.label for e in s.endpoints] == [
        "GET /notes", "GET /notes/<int:note_id>", "POST /notes",
    ]  # fmt: skip
    assert [e.kind for e in s.endpoints] == ["read", "read", "write"]
    mapping = s.mapping()
    assert [t.key for t in mapping.tables] == [("id",), ("note_id", "tag")]
    check = _kit(folder, "manifest", "check", "--structure-only")
    assert check.exit_code == 0, check.output

    service_url = s.database_url
    app = _load(service / "archive_service.py").create_app(service_url)
    assert app.test_client().get("/healthz").status_code == 200
    assert app.test_client().get("/readyz").status_code == 503  # no schema yet
    upgraded = _kit(folder, "db", "upgrade", "archive")
    assert upgraded.exit_code == 0, upgraded.output
    assert table_names(service_url) == {"notes", "tags", "alembic_version"}
    assert app.test_client().get("/readyz").status_code == 200
    assert app.test_client().get("/notes/1").status_code == 501

    again = _extract(folder, "--key", "tags=note_id,tag")
    assert again.exit_code == 1 and "already has [services.archive]" in again.output


SPEC_APP = NOTES_APP.replace(
    '@admin.get("/admin/stats")',
    '@admin.get("/api/openapi.json")\ndef spec():\n    return {}\n\n\n@admin.get("/admin/stats")',
)


def test_init_finds_the_apps_alembic_environment_its_spec_route_and_suggests_a_client_key(
    monolith: tuple[Path, str],
) -> None:
    """An app with an alembic.ini, its own version table and an OpenAPI route: the manifest
    names its migrations and uses the spec route (needs no credentials) as readiness."""
    folder, url = monolith
    (folder / "notes_app.py").write_text(SPEC_APP)
    (folder / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes_schema (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO notes_schema VALUES ('n2')"))
    engine.dispose()
    result = _init(folder, url)
    assert result.exit_code == 0, result.output
    assert "2 table(s)" in result.output  # the version table is not one of the app's
    manifest = (folder / "kit.toml").read_text()
    assert "notes_schema  " not in manifest
    m = load_manifest(folder / "kit.toml")
    assert m.monolith.migrations is not None
    assert m.monolith.migrations.ini == folder / "alembic.ini"
    assert m.monolith.migrations.version_table == "notes_schema"
    assert m.monolith.openapi == "/api/openapi.json"
    assert (m.monolith.ready.path, m.monolith.ready.status) == ("/api/openapi.json", 200)
    assert dict(m.proxy.client_key or {}) == {"hash_header": "Authorization"}


def test_extract_takes_over_only_the_named_tables_and_keeps_the_monolith_venv(
    monolith: tuple[Path, str],
) -> None:
    """A taken-over table refers to one that stays (notes -> authors): the reference is
    dropped, the other table is neither created nor mapped; the service runs in the
    monolith's virtualenv (its symlinked python is not resolved to the base interpreter)."""
    folder, url = monolith
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE authors (id INTEGER PRIMARY KEY, name VARCHAR(20))"))
        conn.execute(
            text(
                "CREATE TABLE memos (id INTEGER PRIMARY KEY, author_id INTEGER REFERENCES authors(id))"
            )
        )
    engine.dispose()
    venv = folder / "appvenv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {Path(sys.executable).parent}\n")
    (venv / "bin" / "python").symlink_to(sys.executable)
    assert _init(folder, url).exit_code == 0
    text_ = (
        (folder / "kit.toml").read_text().replace("[monolith]\n", '[monolith]\nvenv = "appvenv"\n')
    )
    (folder / "kit.toml").write_text(text_)
    done = _kit(folder, "extract", "memos", "--tables", "memos", "--endpoints", "GET /notes")
    assert done.exit_code == 0, done.output
    s = load_manifest(folder / "kit.toml").services["memos"]
    assert s.python == str(venv / "bin" / "python")
    assert s.ready.path == "/healthz"  # `kit up` before the schema step: not /readyz
    assert [t.source for t in s.mapping().tables] == ["memos"]
    revision = next((folder / "services" / "memos" / "migrations" / "versions").glob("*.py"))
    assert "authors" not in revision.read_text()
