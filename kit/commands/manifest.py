"""`kit manifest check|show`: validate the migration manifest and show what it declares."""

from __future__ import annotations

import sys

import click

from kit.manifest import ManifestError, check_manifest, load_manifest, manifest_path, proxy_config


@click.group("manifest")
def cli() -> None:
    """The migration manifest (kit.toml): the single source of truth of the kit."""


@cli.command("check")
@click.option("--structure-only", is_flag=True, help="Skip the checks against live code/DBs.")
def check(structure_only: bool) -> None:
    """Name every problem: unknown endpoints, tables, columns, duplicates, URLs, transport."""
    path = manifest_path(None)
    try:
        m = load_manifest(path)
    except ManifestError as exc:
        for p in exc.problems:
            click.echo(f"{path}: {p}", err=True)
        click.echo(f"{len(exc.problems)} problem(s)", err=True)
        sys.exit(1)
    problems = [] if structure_only else check_manifest(m)
    for p in problems:
        click.echo(f"{path}: {p}", err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s)", err=True)
        sys.exit(1)
    endpoints = sum(len(s.endpoints) for s in m.services.values())
    tables = sum(len(s.tables) for s in m.services.values())
    replicas = sum(len(s.replicas) for s in m.services.values())
    click.echo(
        f"{path}: ok ({len(m.services)} service(s), {endpoints} endpoint(s), {tables} table(s), "
        + (f"{replicas} replica(s), " if replicas else "")
        + f"transport {m.transport.kind})"
    )


@cli.command("show")
def show() -> None:
    """What the manifest derives: services, endpoints, tables, proxy upstreams, CDC topics."""
    from kit.commands.playbook import table
    from kit.playbook.pipelines import forward_pipeline, replica_pipeline, reverse_pipeline

    try:
        m = load_manifest(None)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    cfg = proxy_config(m)
    click.echo(
        table(
            ["SERVICE", "METHOD", "PATH", "KIND", "TABLES", "REPLICAS"],
            [
                (s.name, e.method, e.path, e.kind, ",".join(s.tables), ",".join(s.replicas))
                for s in m.services.values()
                for e in s.endpoints
            ],
        )
    )
    click.echo()
    click.echo(table(["UPSTREAM", "URL"], sorted(cfg.upstreams.items())))
    click.echo()
    rows = []
    for name in m.services:
        pipes = [forward_pipeline(m, name), reverse_pipeline(m, name)]
        if m.services[name].replicas:
            pipes.append(replica_pipeline(m, name))
        for pipe in pipes:
            for t, topic in pipe.topics.items():
                rows.append((name, pipe.direction, t, topic, pipe.group))
    click.echo(table(["SERVICE", "CDC", "SOURCE TABLE", "TOPIC", "SINK GROUP"], rows))
