"""`kit down`: stop everything `kit up` started (SIGTERM, wait, SIGKILL; recorded pids only)."""

from __future__ import annotations

import click

from kit.commands.up import MANIFEST_OPTION, resolve_manifest
from kit.runtime.plan import run_dir
from kit.runtime.supervisor import stop_all


@click.command("down")
@MANIFEST_OPTION
@click.option(
    "--timeout", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)  # fmt: skip
def cli(manifest_opt: str | None, timeout: float) -> None:
    """Stop the watchdog and CDC workers, the proxy, then the services and the monolith."""
    m = resolve_manifest(manifest_opt)
    rundir = run_dir(m)
    results = stop_all(rundir, timeout, click.echo)
    if not results:
        click.echo("nothing was running")
        return
    click.echo(f"• down: {len(results)} process(es) stopped")
