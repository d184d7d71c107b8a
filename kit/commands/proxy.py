"""`kit proxy`: run the strangler-fig proxy, or check its configuration."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import click

from strangler_proxy.bootstrap import ProxyRuntime, bootstrap, serve
from strangler_proxy.config import ProxyConfig, load_config
from strangler_proxy.workers import run as run_loop


def _config(
    config_file: str | None, overrides: dict[str, Any], upstreams: tuple[str, ...]
) -> ProxyConfig:
    try:
        config = load_config(config_file)
        extra = {}
        for item in upstreams:
            name, sep, url = item.partition("=")
            if not sep or not name:
                raise ValueError(f"--upstream must look like NAME=URL, got {item!r}")
            extra[name] = url
        changes = {k: v for k, v in overrides.items() if v is not None}
        if extra:
            changes["upstreams"] = {**config.upstreams, **extra}
        return replace(config, **changes)
    except ValueError as exc:
        raise click.ClickException(f"invalid proxy configuration: {exc}") from exc


_common = [
    click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        envvar="KIT_PROXY_CONFIG",
        help="TOML file (a [proxy] table is accepted).",
    ),
    click.option("--listen-host", default=None),
    click.option("--listen-port", type=int, default=None),
    click.option("--admin-host", default=None),
    click.option("--admin-port", type=int, default=None),
    click.option("--store", "store_url", default=None, help="Route store SQLAlchemy URL."),
    click.option("--upstream", "upstreams", multiple=True, help="NAME=URL (repeatable)."),
    click.option(
        "--workers",
        type=int,
        default=None,
        help="Proxy processes sharing the port (0 = one per CPU; default from config: 1).",
    ),
    click.option(
        "--served-by/--no-served-by",
        "served_by_header",
        default=None,
        help="Add X-Served-By to responses.",
    ),
]


def _with_common(func: Any) -> Any:
    for option in reversed(_common):
        func = option(func)
    return func


@click.group("proxy")
def cli() -> None:
    """The strangler-fig routing proxy."""


@cli.command("run")
@_with_common
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
)
def run(
    config_file: str | None, upstreams: tuple[str, ...], log_level: str, **overrides: Any
) -> None:
    """Start the proxy and its admin API; SIGTERM drains in-flight requests, then exits."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = _config(config_file, overrides, upstreams)
    runtime = bootstrap(config)

    def ready(rt: ProxyRuntime) -> None:
        info = {
            "proxy": rt.proxy_url,
            "admin": rt.admin_url,
            "token_file": str(rt.token_path) if rt.token_path else None,
        }
        click.echo(json.dumps(info), nl=True)
        if rt.token_path:
            click.echo(f"admin token stored in {rt.token_path}", err=True)

    run_loop(serve(runtime, ready=ready), config.event_loop)


@cli.command("check")
@_with_common
def check(config_file: str | None, upstreams: tuple[str, ...], **overrides: Any) -> None:
    """Validate the configuration and print what the proxy would use."""
    config = _config(config_file, overrides, upstreams)
    click.echo(f"listen   {config.listen_host}:{config.listen_port}")
    click.echo(f"admin    {config.admin_host}:{config.admin_port}")
    click.echo(f"store    {config.store_url}")
    click.echo(f"workers  {config.workers or 'one per CPU'}")
    for name, url in sorted(config.upstreams.items()):
        click.echo(f"upstream {name} = {url}")
    for route in config.routes:
        click.echo(f"route    {route.method} {route.path} -> {route.service} ({route.mode})")
