"""Write an Alembic revision that installs change capture, for teams that own their history.

`kit cdc enable` changes a live database outside any migration history; a team that wants
capture to travel with its schema (and be rolled back with it) generates a revision instead.
The revision is written with the environment's own `script.py.mako`, on top of the current
head, and picks the mechanism when it runs, from ``op.get_bind().dialect.name``:

- SQLite: ``install_capture`` / ``remove_capture`` (triggers into ``_cdc_changes``);
- PostgreSQL: ``REPLICA IDENTITY FULL`` / ``DEFAULT`` (the publication and slot stay with
  ``kit cdc enable`` / ``kit cdc run``, they are not schema).

Nothing is added to the default head implicitly: the command only writes a file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.util import rev_id as new_rev_id
from sqlalchemy import MetaData, create_engine
from sqlalchemy.pool import StaticPool

from kit.alembic_runner import UnknownDatabase, alembic_config, migrations_root


class RevisionError(ValueError):
    """The revision cannot be written; the message says why (unknown table, several heads...)."""


def _config(database: str, root: Path | None) -> Config:
    """The environment's Config (quiet: the command prints the path itself)."""
    try:
        return alembic_config(database, root=root, quiet=True)
    except UnknownDatabase as exc:
        raise RevisionError(f"{exc} (under {root or migrations_root()})") from None


def target_metadata(database: str, root: Path | None = None) -> MetaData:
    """The metadata the environment's `env.py` hands to Alembic.

    The environment runs against a throw-away in-memory SQLite connection with no migration
    steps, the way autogenerate reads it, so the answer is exactly what the env declares.
    """
    config = _config(database, root)
    script = ScriptDirectory.from_config(config)
    engine = create_engine("sqlite://", poolclass=StaticPool)
    try:
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            config.attributes["url"] = "sqlite://"
            with EnvironmentContext(config, script, fn=lambda _rev, _ctx: []) as env:
                script.run_env()
                metadata = env.get_context().opts.get("target_metadata")
    finally:
        engine.dispose()
    if isinstance(metadata, Sequence) and metadata:
        merged = MetaData()
        for md in metadata:
            for table in md.tables.values():
                table.to_metadata(merged)
        metadata = merged
    if not isinstance(metadata, MetaData):
        raise RevisionError(f"migrations/{database}/env.py declares no target metadata")
    return metadata


def _quote_pg(table: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))


def _tuple_literal(names: Sequence[str]) -> str:
    items = ", ".join(json.dumps(n) for n in names)
    return f"({items},)" if len(names) == 1 else f"({items})"


def _body(tables: Sequence[str], install: bool) -> str:
    """Function body (indented for the template's 4-space slot) of upgrade or downgrade."""
    sqlite_call = "install_capture" if install else "remove_capture"
    identity = "FULL" if install else "DEFAULT"
    verb = "install" if install else "remove"
    lines = [
        "bind = op.get_bind()",
        'if bind.dialect.name == "sqlite":',
        f"    {sqlite_call}(bind, CAPTURED_TABLES)",
        'elif bind.dialect.name == "postgresql":',
    ]
    for table in tables:
        statement = f"ALTER TABLE {_quote_pg(table)} REPLICA IDENTITY {identity}"
        lines.append(f"    op.execute(sa.text({statement!r}))")
    lines += [
        "else:",
        f'    raise NotImplementedError(f"cannot {verb} change capture on {{bind.dialect.name}}")',
    ]
    return "\n    ".join(lines)


def write_capture_revision(
    tables: Sequence[str],
    database: str = "monolith",
    message: str | None = None,
    root: Path | None = None,
    rev_id: str | None = None,
) -> Path:
    """Write the revision file into `<root>/<database>/versions/` and return its path.

    Refuses tables the environment's metadata does not know, and a history with several
    heads (the revision must have exactly one parent to be a plain step on top of it).
    """
    if not tables:
        raise RevisionError("name at least one table to capture")
    tables = list(dict.fromkeys(tables))
    metadata = target_metadata(database, root)
    unknown = [t for t in tables if t not in metadata.tables]
    if unknown:
        raise RevisionError(
            f"unknown table(s) {', '.join(unknown)} in the {database} schema; known tables: "
            f"{', '.join(sorted(metadata.tables))}"
        )
    script = ScriptDirectory.from_config(_config(database, root))
    heads = script.get_heads()
    if len(heads) > 1:
        raise RevisionError(
            f"migrations/{database} has several heads ({', '.join(sorted(heads))}): merge them "
            "(alembic merge) before adding the capture revision"
        )
    imports = (
        "\nfrom cdc.capture.sqlite import install_capture, remove_capture\n\n"
        f"CAPTURED_TABLES: tuple[str, ...] = {_tuple_literal(tables)}"
    )
    created = script.generate_revision(
        rev_id or new_rev_id(),
        message or f"capture changes of {', '.join(tables)}",
        head="head",
        imports=imports,
        upgrades=_body(tables, install=True),
        downgrades=_body(tables, install=False),
    )
    if created is None:  # pragma: no cover - only with a revision_environment hook
        raise RevisionError("alembic wrote no revision")
    return Path(created.path)
