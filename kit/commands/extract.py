"""`kit extract NAME`: add a service to the manifest and scaffold its folder."""

from __future__ import annotations

from pathlib import Path

import click

from kit.extract import Extraction, parse_endpoints, parse_keys, service_files, service_toml
from kit.manifest import ManifestError, load_manifest
from kit.scaffold import ScaffoldError, append_to_manifest, relative, write_new_files


@click.command("extract")
@click.argument("name")
@click.option("--tables", required=True, help="Monolith tables the service takes over: t1,t2.")
@click.option(
    "--endpoints", required=True, help='Endpoints it takes over: "GET /things,POST /things".'
)
@click.option("--port", type=int, help="Its port (default: 8001 + number of services).")
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Its folder (default: services/NAME next to the manifest).",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="TABLE=COL[,COL]",
    help="The key of a taken-over table that has no primary key.",
)
def cli(
    name: str,
    tables: str,
    endpoints: str,
    port: int | None,
    folder: Path | None,
    keys: tuple[str, ...],
) -> None:
    """Add [services.NAME] to the manifest (appended: your comments stay) and write its
    folder: an Alembic environment whose first revision creates the taken-over tables
    (reflected from the monolith), an identity mapping, and a minimal Flask app with
    /healthz and /readyz. Never overwrites a file."""
    try:
        m = load_manifest()
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    path = m.path or m.root / "kit.toml"
    try:
        if name in m.services:
            raise ScaffoldError(f"{path} already has [services.{name}]")
        wanted = tuple(t.strip() for t in tables.split(",") if t.strip())
        taken = {t: m.owner_of_table(t) for t in wanted if m.owner_of_table(t)}
        if taken:
            owners = ", ".join(f"{t} ({s})" for t, s in taken.items())
            raise ScaffoldError(f"table(s) already taken over by another service: {owners}")
        python = m.monolith.python
        # the monolith's venv (or interpreter): the skeleton needs what the monolith has
        venv = Path(python).parent.parent if python else None
        in_venv = venv is not None and (venv / "pyvenv.cfg").is_file()
        x = Extraction(
            name=name,
            tables=wanted,
            endpoints=tuple(dict.fromkeys(parse_endpoints(endpoints))),
            port=port or 8001 + len(m.services),
            folder=(folder.resolve() if folder else m.root / "services" / name),
            root=m.root,
            python=relative(Path(python), m.root) if python and not in_venv else None,
            venv=relative(venv, m.root) if in_venv and venv else None,
        )
        files = service_files(x, m.monolith.database_url, parse_keys(keys))
        write_new_files(files)
        append_to_manifest(path, "\n" + service_toml(x))
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path}: [services.{name}] added ({len(x.endpoints)} endpoint(s))")
    for written in files:
        click.echo(f"  wrote {relative(written, m.root)}")
    click.echo(f"next: kit db upgrade {name}; write its endpoints in {x.module}.py; kit plan")
