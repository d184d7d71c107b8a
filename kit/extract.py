"""`kit extract`: a new service's starting files and its manifest section.

The service gets its own folder: an Alembic environment whose first revision creates the
tables it takes over (reflected from the monolith's database, types made portable), an
identity mapping of those tables (docs/mapping.md), and a minimal Flask app (factory,
database from its variable, /healthz, /readyz answering 503 until the database is at its
Alembic head, and a 501 stub per endpoint taken over). The team evolves all of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kit.inventory import Route, endpoint_lines
from kit.manifest import HTTP_METHODS
from kit.migrations_spec import DEFAULT_VERSION_TABLE
from kit.scaffold import (
    ScaffoldError,
    alembic_files,
    create_tables_code,
    identity_mapping,
    migrations_toml,
    portable_tables,
    relative,
)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def parse_endpoints(text: str) -> list[Route]:
    """`"GET /things,GET /things/<int:id>,POST /things"` → routes (GET/HEAD read, else write)."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        method, _, path = item.partition(" ")
        method, path = method.upper(), path.strip()
        if method not in HTTP_METHODS or not path.startswith("/"):
            raise ScaffoldError(f"endpoint {item!r} must look like 'METHOD /path'")
        out.append(Route(method, path, ""))
    if not out:
        raise ScaffoldError("name at least one endpoint ('GET /things,POST /things')")
    return out


def parse_keys(items: Sequence[str]) -> dict[str, list[str]]:
    """`--key table=col1,col2` options → {table: [columns]}."""
    keys: dict[str, list[str]] = {}
    for item in items:
        table, sep, cols = item.partition("=")
        columns = [c.strip() for c in cols.split(",") if c.strip()]
        if not sep or not table or not columns:
            raise ScaffoldError(f"--key {item!r} must look like TABLE=COLUMN[,COLUMN]")
        keys[table.strip()] = columns
    return keys


@dataclass(frozen=True)
class Extraction:
    """Everything `kit extract` needs to know about the new service."""

    name: str
    tables: tuple[str, ...]
    endpoints: tuple[Route, ...]
    port: int
    folder: Path
    root: Path  # the manifest's folder
    python: str | None = None  # the monolith's interpreter: the skeleton needs what it has
    venv: str | None = None  # ... or the monolith's virtualenv

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name == "monolith":
            raise ScaffoldError(f"service name {self.name!r} must be lower-case, not 'monolith'")
        if not self.tables:
            raise ScaffoldError("name the tables the service takes over (--tables t1,t2)")

    @property
    def database_env(self) -> str:
        return f"{self.name.upper()}_DATABASE_URL"

    @property
    def module(self) -> str:
        return f"{self.name}_service"


def service_files(x: Extraction, monolith_url: str, keys: Mapping[str, Sequence[str]]) -> dict:
    """Every file of the new service folder, by path."""
    tables = portable_tables(monolith_url, x.tables, keys)
    upgrade, downgrade = create_tables_code(tables)
    files = alembic_files(
        x.folder / "migrations",
        app=x.name,
        how=f"extract {x.name}",
        database_env=x.database_env,
        revision=f"0001_{x.name}_tables",
        message=f"The tables {x.name} takes over from the monolith: {', '.join(x.tables)}.",
        upgrade=upgrade,
        downgrade=downgrade,
    )
    files[x.folder / "alembic.ini"] = ALEMBIC_INI
    files[x.folder / "mapping.toml"] = identity_mapping(x.name, tables)
    files[x.folder / f"{x.module}.py"] = service_app(x)
    return files


def service_toml(x: Extraction) -> str:
    """The `[services.NAME]` section appended to the manifest."""
    rel = relative(x.folder, x.root)
    lines = [
        f"# written by `kit extract {x.name}` on {datetime.now(UTC):%Y-%m-%d}",
        f"[services.{x.name}]",
        f'url = "http://127.0.0.1:{x.port}"',
        f'database_url = "${{{x.database_env}:-sqlite:///var/{x.name}.db}}"',
        f'cwd = "{rel}"',
        f'app = "{x.module}:create_app()"',
    ]
    if x.python:
        lines.append(f"python = {json.dumps(x.python)}")
    if x.venv:
        lines.append(f"venv = {json.dumps(x.venv)}")
    lines += [
        "# `kit up` waits for the process (/healthz); /readyz answers 503 until the `schema`",
        "# step brings its database to its Alembic head, and the playbook checks that one",
        'ready = { path = "/healthz" }',
        f'mapping = "{rel}/mapping.toml"',
        f"tables = [{', '.join(json.dumps(t) for t in x.tables)}]",
        "endpoints = [",
        *endpoint_lines(x.endpoints),
        "]",
        "",
        migrations_toml(
            f"services.{x.name}", x.folder / "migrations", x.root, DEFAULT_VERSION_TABLE
        ),
    ]
    return "\n".join(lines)


ALEMBIC_INI = """# For running this service's Alembic by hand: alembic -c alembic.ini upgrade head
# (the URL comes from the service's database variable, see migrations/env.py).
[alembic]
script_location = %(here)s/migrations
"""


def _view_name(route: Route) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", route.path.lower()).strip("_") or "root"
    return f"{route.method.lower()}_{words}"


def service_app(x: Extraction) -> str:
    """A minimal Flask app: factory, engine from its variable, health, readiness, stubs."""
    stubs = []
    for r in x.endpoints:
        stubs += [
            "",
            f'    @app.route("{r.path}", methods=["{r.method}"])',
            f"    def {_view_name(r)}(**params: object) -> tuple[Response, int]:",
            f'        """{r.method} {r.path} ({r.kind}): taken over from the monolith."""',
            f'        return not_implemented("{r.method} {r.path}")',
        ]
    return SERVICE_APP.format(
        name=x.name, env=x.database_env, version_table=DEFAULT_VERSION_TABLE, stubs="\n".join(stubs)
    )


SERVICE_APP = '''"""The {name} service (written by `kit extract {name}`; yours to evolve).

Its database URL comes from ${env}. /healthz answers while the process lives; /readyz answers
503 until the database is at the head of this service's own Alembic history (migrations/),
so traffic only arrives once its schema exists. The endpoints taken over from the monolith
answer 501 until you write them.
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, Response, jsonify
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "{version_table}"


def not_implemented(endpoint: str) -> tuple[Response, int]:
    return jsonify(code="not_implemented", message=f"{{endpoint}} is not written yet"), 501


def create_app(database_url: str | None = None) -> Flask:
    url = database_url or os.environ.get("{env}")
    if not url:
        raise RuntimeError("no database URL: set {env}")
    app = Flask(__name__)
    # SQLite: CDC writes into this file too, so wait for its write lock instead of failing
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, pool_pre_ping=True, connect_args={{"timeout": 30}} if sqlite else {{}})
    heads = set(ScriptDirectory(str(MIGRATIONS)).get_heads())
    app.extensions["{name}_engine"] = engine

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(
                    connection, opts={{"version_table": VERSION_TABLE}}
                )
                current = set(context.get_current_heads())
        except SQLAlchemyError as exc:
            return jsonify(status="unavailable", reason=f"database: {{exc.__class__.__name__}}"), 503
        if current != heads:
            return jsonify(status="unavailable", reason="database not at its Alembic head"), 503
        return jsonify(status="ready"), 200
{stubs}

    return app
'''
