"""The `kit` command line: a click group that mounts one sub-command group per module.

Each module in `kit.commands` exposes a `click.Group` (or command) named `cli`; list it in
`COMMAND_MODULES` to mount it. Keeping the list explicit keeps `kit --help` predictable.
"""

from __future__ import annotations

import importlib

import click

COMMAND_MODULES: tuple[str, ...] = (
    "kit.commands.db",
    "kit.commands.seed",
    "kit.commands.demo",
    "kit.commands.cdc",
    "kit.commands.route",
    "kit.commands.proxy",
    "kit.commands.parity",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="strangler-kit")
def main() -> None:
    """Strangler-fig migration kit: split a Flask monolith into services safely."""


def _mount() -> None:
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        main.add_command(module.cli)


_mount()


if __name__ == "__main__":
    main()
