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
from typing import Any

from alembic.util import rev_id as new_rev_id

from kit.alembic_runner import run_appside, script_directory
from kit.migrations_spec import MigrationRefused, MigrationsSpec


class RevisionError(ValueError):
    """The revision cannot be written; the message says why (unknown table, several heads...)."""


def target_tables(mig: MigrationsSpec, runtime: Any) -> set[str]:
    """Tables of the metadata the environment's `env.py` hands to Alembic, read in the app's
    interpreter (env.py imports the app's models) against an in-memory SQLite connection."""
    answer = run_appside(mig, runtime, "tables", "sqlite://")
    tables = set(answer.get("tables", {}))
    if not tables:
        raise RevisionError(f"{mig.folder}/env.py declares no target metadata")
    return tables


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
    mig: MigrationsSpec,
    runtime: Any,
    message: str | None = None,
    rev_id: str | None = None,
) -> Path:
    """Write the revision file into the app's own `<script_location>/versions/` and return
    its path (`runtime`: the app's `kit.appenv.AppRuntime`, where env.py is read).

    Refuses tables the environment's metadata does not know, and a history with several
    heads (the revision must have exactly one parent to be a plain step on top of it).
    """
    if not tables:
        raise RevisionError("name at least one table to capture")
    tables = list(dict.fromkeys(tables))
    try:
        script = script_directory(mig)
    except MigrationRefused as exc:
        raise RevisionError(str(exc)) from None
    known = target_tables(mig, runtime)
    unknown = [t for t in tables if t not in known]
    if unknown:
        raise RevisionError(
            f"unknown table(s) {', '.join(unknown)} in the schema of {mig.folder}; "
            f"known tables: {', '.join(sorted(known))}"
        )
    heads = script.get_heads()
    if len(heads) > 1:
        raise RevisionError(
            f"{mig.folder} has several heads ({', '.join(sorted(heads))}): merge them "
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
