"""`kit seed`: fill the monolith's database the way its team does (the manifest's `seed`)."""

from __future__ import annotations

import click

from kit.commands.up import MANIFEST_OPTION, resolve_manifest
from kit.runtime.seeding import SeedFailed, seed_monolith


@click.command("seed", context_settings={"ignore_unknown_options": True})
@MANIFEST_OPTION
@click.option("--url", help="Database URL (default: the manifest's monolith.database_url).")
@click.option("--migrate/--no-migrate", default=True, show_default=True,
              help="Upgrade the monolith's schema to head before seeding.")  # fmt: skip
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cli(manifest_opt: str | None, url: str | None, migrate: bool, args: tuple[str, ...]) -> None:
    """Seed the monolith: run the manifest's `[monolith] seed` command in the monolith's own
    interpreter, folder and environment. ARGS go to that command, e.g. for the shop:
    `kit seed --scale 10 --seed 7`."""
    m = resolve_manifest(manifest_opt)
    try:
        seed_monolith(m, args, database_url=url, migrate=migrate)
    except SeedFailed as exc:
        raise click.ClickException(str(exc)) from None
