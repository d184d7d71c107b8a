"""`kit init`: read a monolith (its routes and tables) and write a starting manifest."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kit.inventory import (
    InventoryError,
    migrations_of,
    read_openapi,
    render_manifest,
    routes_of_openapi,
    routes_of_url_map,
    spec_route,
    tables_of,
)
from kit.scaffold import ScaffoldError, relative, write_new_files


@click.command("init")
@click.option("--app", "app", metavar="MOD:FACTORY", help="The monolith's Flask app factory.")
@click.option("--openapi", metavar="URL|FILE", help="Its OpenAPI document (instead of --app).")
@click.option("--database-url", required=True, help="The monolith's database (reflected).")
@click.option("--python", "python", metavar="PATH", help="The monolith's interpreter.")
@click.option("--venv", metavar="DIR", help="The monolith's virtualenv (instead of --python).")
@click.option("--cwd", "cwd", metavar="DIR", help="The monolith's working folder.")
@click.option("--database-env", metavar="NAME", help="Variable carrying its database URL.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Where it serves.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("kit.toml"),
    show_default=True,
    help="The manifest to write (never overwritten).",
)
def cli(
    app: str | None,
    openapi: str | None,
    database_url: str,
    python: str | None,
    venv: str | None,
    cwd: str | None,
    database_env: str | None,
    url: str,
    output: Path,
) -> None:
    """Write a starting manifest from the monolith: its endpoints by blueprint (url_map read in
    the monolith's own interpreter, or its OpenAPI document) and its tables (reflection)."""
    if (app is None) == (openapi is None):
        raise click.UsageError("give exactly one of --app MOD:FACTORY and --openapi URL")
    if python and venv:
        raise click.UsageError("give either --python or --venv, not both")
    if output.exists():
        raise click.ClickException(f"refusing to overwrite {output} (nothing written)")
    root = output.resolve().parent
    folder = Path(cwd).resolve() if cwd else root
    keys: dict[str, str | bool] = {"url": url, "database_url": database_url}
    if app:
        keys["app"] = app
    else:  # known by its document only: the team runs it (or adds `command`)
        keys["external"] = True
    for key, value in (("python", python), ("venv", venv)):
        if value:
            keys[key] = relative(Path(value), root)
    if cwd:
        keys["cwd"] = relative(folder, root)
    if database_env:
        keys["database_env"] = database_env
    try:
        if app:
            routes = routes_of_url_map(
                _url_map(app, python, venv, folder, database_env, database_url)
            )
            source = f"the url_map of {app}"
        else:
            assert openapi is not None
            routes = routes_of_openapi(read_openapi(openapi))
            source = f"the OpenAPI document {openapi}"
            if openapi.startswith(("http://", "https://")):
                keys["openapi"] = openapi
        tables = tables_of(database_url)
        extra: list[str] = []
        spec = spec_route(routes) if app else None
        if spec:  # a GET that needs no credentials: the readiness check and the API description
            keys["openapi"] = spec
            extra.append(f'ready = {{ path = "{spec}", status = 200 }}')
        extra += migrations_of(folder, tables, root)
        text = render_manifest(keys, routes, tables, source, extra)
        write_new_files({output: text})
    except (InventoryError, ScaffoldError) as exc:
        raise click.ClickException(str(exc)) from None
    keyless = [t.name for t in tables if not t.primary_key and not t.version_table]
    click.echo(
        f"{output}: {len(routes)} endpoint(s) in {len({r.group for r in routes})} group(s), "
        f"{len([t for t in tables if not t.version_table])} table(s)"
        + (f"; no primary key: {', '.join(keyless)}" if keyless else "")
    )


def _url_map(
    app: str,
    python: str | None,
    venv: str | None,
    cwd: Path,
    database_env: str | None,
    database_url: str,
) -> list[dict[str, object]]:
    """The app's url_map, read in its own interpreter (`kit/appside/introspect.py`)."""
    from kit.appenv import AppRuntime, AppScriptError, run_app_script

    interpreter = python or (str(Path(venv) / "bin" / "python") if venv else sys.executable)
    env = {(database_env or "MONOLITH_DATABASE_URL"): database_url}
    runtime = AppRuntime("monolith", str(Path(interpreter).absolute()), cwd, env)
    try:
        return list(run_app_script(runtime, "introspect.py", "url_map", app)["rules"])
    except AppScriptError as exc:
        raise InventoryError(str(exc)) from None
