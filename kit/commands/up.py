"""`kit up`: start everything the manifest describes, health-checked, idempotently.

`kit down` (kit/commands/down.py) stops it again. Logs go to `<var_dir>/log/<name>.log`,
pid records to `<var_dir>/run/<name>.json`.
"""

from __future__ import annotations

import time

import click

from kit.manifest import Manifest, ManifestError, load_manifest
from kit.runtime.plan import admin_url, build_specs, proxy_url, run_dir
from kit.runtime.supervisor import StartFailed, Supervisor
from kit.runtime.watchdog import read_state

MANIFEST_OPTION = click.option(
    "--manifest",
    "manifest_opt",
    type=click.Path(dir_okay=False),
    default=None,
    help="Manifest file (default: kit --manifest, $KIT_MANIFEST, else ./kit.toml).",
)


def resolve_manifest(manifest_opt: str | None) -> Manifest:
    """Load the manifest named here, else by the root `kit --manifest`, else the default."""
    path = manifest_opt
    if path is None:
        ctx = click.get_current_context(silent=True)
        root = ctx.find_root() if ctx is not None else None
        if root is not None:
            path = root.params.get("manifest") or None
            if path is None and isinstance(root.obj, dict):
                path = root.obj.get("manifest")
    try:
        return load_manifest(path)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None


def supervisor_for(m: Manifest, echo=click.echo) -> Supervisor:  # noqa: ANN001
    try:
        specs = build_specs(m)
    except ValueError as exc:
        raise click.ClickException(f"cannot run the manifest: {exc}") from None
    return Supervisor(specs, run_dir(m), echo=echo)


def print_status(m: Manifest) -> int:
    """A table of every process; returns how many are down or unhealthy."""
    supervisor = supervisor_for(m)
    bad = 0
    click.echo(f"{'process':<24}{'pid':<9}{'state':<12}{'log'}")
    for spec, record, healthy in supervisor.status():
        name = spec.name
        if spec.external:
            state = "external" if healthy else "EXT. DOWN"
            bad += not healthy
            click.echo(f"{name:<24}{'-':<9}{state:<12}{spec.ready_url}")
            continue
        if record is None:
            state, pid, log = "stopped", "-", str(supervisor.rundir.log_path(name))
            bad += 1
        else:
            state = {True: "ready", False: "UNHEALTHY", None: "running"}[healthy]
            pid, log = str(record.pid), record.log_path
            bad += healthy is False
        click.echo(f"{name:<24}{pid:<9}{state:<12}{log}")
    workers = [r for r in supervisor.rundir.records() if r.kind == "cdc"]
    for record in workers:
        click.echo(f"{record.name:<24}{record.pid:<9}{'running':<12}{record.log_path}")
    state = read_state(supervisor.rundir)
    if state:
        click.echo(f"CDC worker restarts by the watchdog: {state['restarts']}")
    return bad


@click.command("up")
@MANIFEST_OPTION
@click.option("--status", "status_only", is_flag=True, help="Only show what is running.")
def cli(manifest_opt: str | None, status_only: bool) -> None:
    """Start the monolith, services, proxy and CDC watchdog per the manifest (idempotent)."""
    m = resolve_manifest(manifest_opt)
    if status_only:
        if print_status(m):
            raise SystemExit(1)
        return
    supervisor = supervisor_for(m)
    click.echo(f"• starting from {m.path} (logs in {supervisor.rundir.log_dir})")
    started = time.monotonic()
    try:
        results = supervisor.up()
    except StartFailed as exc:
        raise click.ClickException(
            f"{exc}\n(what did start keeps running: `kit down` stops it)"
        ) from None
    fresh = sum(r.outcome == "started" for r in results)
    click.echo(
        f"• up: {fresh} started, {len(results) - fresh} already running "
        f"({time.monotonic() - started:.1f}s)"
    )
    click.echo(
        f"  clients → {proxy_url(m)}   admin → {admin_url(m)} (token in {m.proxy.token_file})"
    )
