"""The `kit` command line: a click group that mounts one sub-command group per module.

Each module in `kit.commands` exposes a `click.Group` (or command) named `cli`; list it in
`COMMAND_MODULES` to mount it. Keeping the list explicit keeps `kit --help` predictable.
"""

from __future__ import annotations

import importlib
import os

import click

COMMAND_MODULES: tuple[str, ...] = (
    "kit.commands.init",
    "kit.commands.extract",
    "kit.commands.db",
    "kit.commands.seed",
    "kit.commands.demo",
    "kit.commands.cdc",
    "kit.commands.route",
    "kit.commands.proxy",
    "kit.commands.parity",
    "kit.commands.up",
    "kit.commands.down",
    "kit.commands.manifest",
    "kit.commands.plan",
    "kit.commands.step",
    "kit.commands.advance",
    "kit.commands.rollback",
    "kit.commands.status",
    "kit.commands.worker",
)


def _select_manifest(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`kit --manifest PATH ...` is the same as KIT_MANIFEST=PATH (read by kit.manifest)."""
    if value:
        os.environ["KIT_MANIFEST"] = value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="strangler-kit")
@click.option(
    "--manifest",
    metavar="PATH",
    expose_value=False,
    is_eager=True,
    callback=_select_manifest,
    help="Migration manifest (default: $KIT_MANIFEST, else ./kit.toml).",
)
def main() -> None:
    """Strangler-fig migration kit: split a Flask monolith into services safely."""


def _mount() -> None:
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        main.add_command(module.cli)


_mount()


if __name__ == "__main__":
    main()
