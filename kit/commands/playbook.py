"""`kit plan|step|advance|rollback|status` and `kit worker`: the migration playbook.

Every command reads the manifest (`kit --manifest PATH`, $KIT_MANIFEST, else ./kit.toml).
Refusals print the reason and the way forward and exit 2; failed steps exit 1.
Each top-level command is mounted through a tiny alias module (kit/commands/plan.py, ...),
since kit/cli.py mounts one `cli` object per module.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from kit.manifest import Manifest, ManifestError, load_manifest

EXIT_FAILED = 1
EXIT_REFUSED = 2


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def manifest() -> Manifest:
    try:
        return load_manifest(None)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None


def _playbook(actor: str | None = None) -> Any:
    from kit.playbook import Playbook

    return Playbook(manifest(), actor=actor)


def _run_on_playbook(actor: str, action: Any) -> None:
    """`_run(action(pb))` on a playbook acting as `actor`, closed whatever happens."""
    pb = _playbook(actor)
    try:
        _run(lambda: action(pb))
    finally:
        pb.close()


def _when(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else None


def _echo_progress(line: str) -> None:
    click.echo(f"  {line}")


def _run(fn: Any) -> None:
    """Call a playbook action; map refusals and failures to messages and exit codes."""
    from kit.manifest import ManifestError
    from kit.playbook import StepRefused

    try:
        result = fn()
    except StepRefused as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    evidence = {k: v for k, v in result.evidence.items() if not k.startswith("_")}
    if evidence:
        click.echo("  evidence: " + json.dumps(evidence, default=str, sort_keys=True))
    click.echo(str(result))
    if not result.ok:
        sys.exit(EXIT_FAILED)


_actor = click.option(
    "--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER"
)
_force = click.option(
    "--force", is_flag=True, help="Override refusals (each override is written to the audit log)."
)


@click.command("plan")
@click.argument("service")
def plan(service: str) -> None:
    """Show SERVICE's steps with their state, and what to do next."""
    pb = _playbook()
    try:
        rows = pb.plan(service)
        click.echo(
            table(
                ["#", "STEP", "STATUS", "STARTED", "FINISHED", "DETAIL"],
                [
                    (i + 1, r.step, r.status, _when(r.started_at), _when(r.finished_at), r.detail)
                    for i, r in enumerate(rows)
                ],
            )
        )
        click.echo(f"\n{service}: {pb.explain(service)}")
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        pb.close()


@click.command("step")
@click.argument("service")
@click.argument("step")
@_force
@_actor
def step(service: str, step: str, force: bool, actor: str) -> None:
    """Run STEP of SERVICE (schema, capture, verify, shadow, canary, reads, writes, retire).

    Re-running an interrupted or failed step completes it (steps are idempotent).
    """
    _run_on_playbook(actor, lambda pb: pb.step(service, step, force=force, progress=_echo_progress))


@click.command("advance")
@click.argument("service")
@_force
@_actor
def advance(service: str, force: bool, actor: str) -> None:
    """Run SERVICE's next step (in canary: raise the share to the next stage)."""
    _run_on_playbook(actor, lambda pb: pb.advance(service, force=force, progress=_echo_progress))


@click.command("rollback")
@click.argument("service")
@_force
@_actor
def rollback(service: str, force: bool, actor: str) -> None:
    """Undo SERVICE's current step and return to the previous one (also after a crash)."""
    _run_on_playbook(actor, lambda pb: pb.rollback(service, force=force, progress=_echo_progress))


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--audit", "audit_n", type=int, default=5, show_default=True,
              help="Show the last N audit entries (forced overrides, refusals).")  # fmt: skip
def status(as_json: bool, audit_n: int) -> None:
    """Every service's step, every endpoint's mode, CDC lag and parity rates."""
    from kit.playbook import collect_status

    pb = _playbook()
    try:
        st = collect_status(pb)
        if as_json:
            click.echo(json.dumps(st.to_dict(), default=str, indent=2))
            return
        click.echo(
            table(
                ["SERVICE", "STEP", "STATUS", "POS", "WRITES OWNED BY", "NEXT"],
                [
                    (s.service, s.step or "-", s.status, s.position, s.write_owner, s.explanation)
                    for s in st.services
                ],
            )
        )
        click.echo()
        click.echo(
            table(
                [
                    "SERVICE",
                    "METHOD",
                    "PATH",
                    "KIND",
                    "MODE",
                    "PARITY SAMPLES",
                    "MISMATCH",
                    "LAGGED",
                ],
                [
                    (
                        e.service,
                        e.method,
                        e.path,
                        e.kind,
                        e.mode,
                        e.samples,
                        None if e.mismatch_rate is None else f"{e.mismatch_rate:.1%}",
                        e.lagged,
                    )
                    for e in st.endpoints
                ],
            )
        )
        if st.lag:
            click.echo()
            click.echo(
                table(
                    ["SERVICE", "CDC", "TABLE", "LAG EVENTS", "LAG S", "DEAD LETTERS"]
                    + (["SLOT LAG B"] if any(x.slot_lag_bytes is not None for x in st.lag) else [])
                    + (["GROUP LAG"] if pb.m.transport.kind == "kafka" else []),
                    [
                        (
                            x.service,
                            x.direction,
                            x.table,
                            x.events,
                            None if x.seconds is None else f"{x.seconds:.1f}",
                            x.dead_letters,
                        )
                        + (
                            (x.slot_lag_bytes,)
                            if any(y.slot_lag_bytes is not None for y in st.lag)
                            else ()
                        )
                        + ((x.group_lag,) if pb.m.transport.kind == "kafka" else ())
                        for x in st.lag
                    ],
                )
            )
        wanted = [n for n, d in st.workers.items() if d]
        click.echo(f"\nworkers wanted: {', '.join(wanted) or '(none)'}")
        if audit_n:
            entries = pb.state.audit_log(audit_n)
            if entries:
                click.echo("\nrecent audit:")
                for a in entries:
                    click.echo(f"  {_when(a.at)} {a.kind:<8} {a.actor}: {a.message[:160]}")
        for note in st.notes:
            click.echo(f"note: {note}", err=True)
    finally:
        pb.close()


@click.group("worker")
def worker() -> None:
    """Long-lived processes `kit up` runs for the playbook (CDC workers, the proxy)."""


@worker.command("list")
def worker_list() -> None:
    """Workers the playbook wants running now."""
    from kit.playbook.workers import desired_workers, worker_names

    m = manifest()
    wanted = {w.name for w in desired_workers(m)}
    click.echo(table(["WORKER", "WANTED"], [(n, n in wanted) for n in worker_names(m)]))


@worker.command("run")
@click.argument("name")
def worker_run(name: str) -> None:
    """Run CDC worker NAME (capture:monolith, sink:<svc>, capture:<svc>, sink:<svc>:reverse)
    until SIGTERM/SIGINT; waits while another process holds the worker."""
    from cdc.sink import SinkError
    from kit.playbook.pipelines import PipelineError, run_worker

    m = manifest()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    click.echo(f"worker {name}: running", err=True)
    try:
        run_worker(m, name, stop)
    except (PipelineError, SinkError) as exc:  # SinkError: a sink that cannot start
        raise click.ClickException(str(exc)) from None
    click.echo(f"worker {name}: stopped cleanly", err=True)


@worker.command("proxy")
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
)
def worker_proxy(log_level: str) -> None:
    """Run the proxy from the manifest, with playbook guards and live parity statistics."""
    import logging

    from kit.playbook.proxy import build_proxy
    from strangler_proxy.bootstrap import serve

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = build_proxy(manifest())

    def ready(rt: Any) -> None:
        info = {
            "proxy": rt.proxy_url,
            "admin": rt.admin_url,
            "token_file": str(rt.token_path) if rt.token_path else None,
        }
        click.echo(json.dumps(info))

    asyncio.run(serve(runtime, ready=ready))
