"""Files the kit writes once for a team to evolve: an Alembic environment (with an empty
baseline or a first revision creating taken-over tables), an identity mapping and a minimal
service app. Nothing here overwrites: every writer checks all its paths first and refuses,
naming the file, before writing any (`write_new_files`). The manifest is only ever appended
to (`append_to_manifest`), so the team's comments and layout stay as they are.

The generated code imports only what a Flask + SQLAlchemy + Alembic app already has; never
the kit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from kit.migrations_spec import DEFAULT_VERSION_TABLE, MigrationsSpec


class ScaffoldError(ValueError):
    """Nothing was written; the message names the file or table in the way."""


def write_new_files(files: Mapping[Path, str]) -> list[Path]:
    """Write every file, or none when any of them exists already."""
    existing = [p for p in files if p.exists()]
    if existing:
        names = ", ".join(str(p) for p in existing)
        raise ScaffoldError(f"refusing to overwrite existing file(s): {names} (nothing written)")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)


def append_to_manifest(path: Path, text: str) -> None:
    """Append TOML to the manifest (never re-serialised: comments and order stay)."""
    headers = re.findall(r"^\[([^\]]+)\]", text, flags=re.MULTILINE)
    have = path.read_text() if path.exists() else ""
    for header in headers:
        if re.search(rf"^\[{re.escape(header)}\]", have, flags=re.MULTILINE):
            raise ScaffoldError(f"{path} already has [{header}] (nothing written)")
    with path.open("a") as out:
        out.write(("\n" if have and not have.endswith("\n\n") else "") + text)


def relative(path: Path, root: Path) -> str:
    """`path` as the manifest writes it: relative to the manifest's folder when inside it.

    The last component is not resolved: a virtualenv's `bin/python` is a symlink to the base
    interpreter, and following it would name an interpreter without the venv's packages."""
    full = path.absolute().parent.resolve() / path.name
    try:
        return os.path.relpath(full, root.resolve())
    except ValueError:  # another drive
        return str(full)


# ---------------------------------------------------------------------------------------------
# Alembic environment

ENV_PY = '''"""Alembic environment of {app} (written by `kit {how}`; yours to evolve).

The database URL comes from `config.attributes["url"]` (set by the kit), else the ini's
`sqlalchemy.url`, else ${database_env}. Point `target_metadata` at your models' MetaData to use
`alembic revision --autogenerate`.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
VERSION_TABLE = config.attributes.get("version_table", "{version_table}")
target_metadata = None


def _url() -> str:
    url = (
        config.attributes.get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("{database_env}")
    )
    if not url:
        raise RuntimeError("no database URL: set {database_env}")
    return url


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        dialect_opts={{"paramstyle": "named"}},
    )
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()
'''

SCRIPT_MAKO = '''"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''

REVISION = '''"""{message}

Revision ID: {revision}
Revises:
Written by `kit {how}`.
"""

import sqlalchemy as sa  # noqa: F401 - used by the operations below
from alembic import op  # noqa: F401

revision = {revision!r}
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def alembic_files(
    folder: Path,
    *,
    app: str,
    how: str,
    database_env: str,
    revision: str,
    message: str,
    upgrade: str = "    pass",
    downgrade: str = "    pass",
    version_table: str = DEFAULT_VERSION_TABLE,
) -> dict[Path, str]:
    """env.py, script.py.mako and the first revision of a new Alembic folder."""
    env = ENV_PY.format(app=app, how=how, database_env=database_env, version_table=version_table)
    first = REVISION.format(
        message=message, revision=revision, how=how, upgrade=upgrade, downgrade=downgrade
    )
    return {
        folder / "env.py": env,
        folder / "script.py.mako": SCRIPT_MAKO,
        folder / "versions" / f"{revision}.py": first,
    }


def migrations_toml(section: str, folder: Path, root: Path, version_table: str) -> str:
    return (
        f"[{section}.migrations]\n"
        f'script_location = "{relative(folder, root)}"\n'
        f'version_table = "{version_table}"\n'
    )


def write_baseline(
    folder: Path, root: Path, app: str, database_env: str
) -> tuple[MigrationsSpec, str]:
    """An Alembic folder whose first revision is empty (the schema as it is today); returns
    its description and the manifest lines naming it."""
    files = alembic_files(
        folder,
        app=app,
        how=f"db baseline {app}",
        database_env=database_env,
        revision="0001_baseline",
        message=f"Baseline: the {app} schema as it was when Alembic was adopted (no change).",
    )
    write_new_files(files)
    section = "monolith" if app == "monolith" else f"services.{app}"
    return MigrationsSpec(script_location=folder), migrations_toml(
        section, folder, root, DEFAULT_VERSION_TABLE
    )


# ---------------------------------------------------------------------------------------------
# taken-over tables: first revision and identity mapping


def portable_tables(url: str, names: Sequence[str], keys: Mapping[str, Sequence[str]]) -> list:
    """The monolith's tables `names`, reflected and made portable: generic column types,
    no dialect-specific server defaults, foreign keys only among `names`, and the declared
    key (`keys`) as primary key of a table that has none. ScaffoldError names a table that is
    missing, or has no primary key and no declared key."""
    from sqlalchemy import MetaData, PrimaryKeyConstraint, Table
    from sqlalchemy.exc import NoSuchTableError

    from kitcore.db import make_engine

    source, target = MetaData(), MetaData()
    engine = make_engine(url)
    try:
        for name in names:
            try:
                Table(name, source, autoload_with=engine)
            except NoSuchTableError:
                raise ScaffoldError(f"table {name!r} is not in the monolith database") from None
    finally:
        engine.dispose()
    out = []
    # reflection also loads the tables they refer to: only the taken-over ones are copied
    for table in [t for t in source.sorted_tables if t.name in names]:
        copy = table.to_metadata(target)
        for fk in list(copy.foreign_key_constraints):
            referred = fk.elements[0].target_fullname.rsplit(".", 2)[-2]  # [schema.]table.col
            if referred not in names:
                copy.constraints.discard(fk)
                for col in fk.columns:
                    col.foreign_keys.clear()
        for column in copy.columns:
            try:
                column.type = column.type.as_generic()
            except NotImplementedError:
                pass
            default = column.server_default
            text = str(getattr(default, "arg", "")) if default is not None else ""
            if "nextval" in text or "::" in text:
                column.server_default = None
        if not copy.primary_key.columns:
            declared = list(keys.get(table.name, ()))
            if not declared:
                raise ScaffoldError(
                    f"table {table.name!r} has no primary key: declare the key the service "
                    f"will use (--key {table.name}=COLUMN[,COLUMN])"
                )
            unknown = [c for c in declared if c not in copy.columns]
            if unknown:
                raise ScaffoldError(f"table {table.name!r} has no column(s) {', '.join(unknown)}")
            for c in declared:
                copy.columns[c].nullable = False
            copy.append_constraint(PrimaryKeyConstraint(*declared))
        for column in copy.primary_key.columns:
            column.nullable = False  # SQLite reflects INTEGER PRIMARY KEY as nullable
        out.append(copy)
    return out


def create_tables_code(tables: list) -> tuple[str, str]:
    """(upgrade, downgrade) bodies creating the tables (and their indexes) and dropping them."""
    from alembic.autogenerate import render_python_code
    from alembic.operations import ops

    creates: list = []
    for t in tables:
        creates.append(ops.CreateTableOp.from_table(t))
        creates += [ops.CreateIndexOp.from_index(ix) for ix in sorted(t.indexes, key=str)]
    up = render_python_code(ops.UpgradeOps(ops=creates))
    down = render_python_code(
        ops.UpgradeOps(ops=[ops.DropTableOp.from_table(t) for t in reversed(tables)])
    )
    return indent_code(up), indent_code(down)


def indent_code(code: str) -> str:
    """Rendered Alembic operations as a function body (4 spaces; `pass` when empty)."""
    lines = [ln for ln in code.splitlines() if ln.strip() and not ln.strip().startswith("# ###")]
    return "\n".join(ln if ln.startswith("    ") else "    " + ln for ln in lines) or "    pass"


def identity_mapping(service: str, tables: list) -> str:
    """A mapping (docs/mapping.md) copying every column of every table as it is."""
    out = [
        f"# Monolith tables taken over by {service}: identity mapping written by `kit extract`",
        "# (format: docs/mapping.md). Evolve the service's schema by editing it.",
        f'service = "{service}"',
    ]
    for t in tables:
        key = ", ".join(f'"{c.name}"' for c in t.primary_key.columns)
        out += ["", "[[tables]]", f'source = "{t.name}"', f'target = "{t.name}"']
        out += [f"key = [{key}]", "strict = true", "", "[tables.columns]"]
        out += [f'{_toml_key(c.name)} = "{c.name}"' for c in t.columns]
    return "\n".join(out) + "\n"


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace('"', '\\"') + '"'
