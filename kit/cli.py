"""The `kit` command line: a click group whose sub-commands are imported only when used.

Each module in `kit.commands` exposes a `click.Group` (or command) named `cli`; list it in
`COMMANDS` with the one line `kit --help` shows for it. `kit --help` (and every command)
then imports only the module it runs: loading all of them pulled in SQLAlchemy, Alembic,
aiohttp, the proxy and the CDC workers before printing a line
(tests/unit/test_cli_lazy.py checks the listed help matches each command's own).
"""

from __future__ import annotations

import importlib
import os

import click

#: name → (module with a `cli` command, the short help `kit --help` lists)
COMMANDS: dict[str, tuple[str, str]] = {
    "advance": ("kit.commands.advance", "Run SERVICE's next step (in canary: raise the share)."),
    "cdc": ("kit.commands.cdc", "Change data capture: monolith tables → event log → service."),
    "db": ("kit.commands.db", "Schema migrations: each app's own Alembic environment."),
    "demo": ("kit.commands.demo", "A whole migration, live, under client traffic."),
    "down": ("kit.commands.down", "Stop everything `kit up` started."),
    "extract": ("kit.commands.extract", "Add a service to the manifest and scaffold its folder."),
    "init": ("kit.commands.init", "Write a starting manifest from the monolith's code and DB."),
    "manifest": ("kit.commands.manifest", "The migration manifest: check it, show it."),
    "parity": ("kit.commands.parity", "Compare monolith and service responses."),
    "plan": ("kit.commands.plan", "Show SERVICE's steps with their state, and what to do next."),
    "proxy": ("kit.commands.proxy", "The strangler-fig routing proxy."),
    "rollback": ("kit.commands.rollback", "Undo SERVICE's current step."),
    "route": ("kit.commands.route", "Show and change per-endpoint routing."),
    "seed": ("kit.commands.seed", "Seed the monolith with the manifest's seed command."),
    "status": ("kit.commands.status", "Every service's step, endpoint modes, CDC lag, parity."),
    "step": ("kit.commands.step", "Run one STEP of SERVICE."),
    "up": ("kit.commands.up", "Start the apps, proxy and CDC watchdog per the manifest."),
    "worker": ("kit.commands.worker", "Long-lived processes `kit up` runs for the playbook."),
}


class LazyGroup(click.Group):
    """A group that imports a sub-command's module only when that command is looked up to
    run (the click documentation's lazy-loading pattern); `--help` lists `COMMANDS`."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]], **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module = importlib.import_module(self.lazy[cmd_name][0])
            self.add_command(module.cli, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (name, self.commands[name].get_short_help_str(80))
            if name in self.commands
            else (name, self.lazy[name][1])
            for name in self.list_commands(ctx)
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _select_manifest(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`kit --manifest PATH ...` is the same as KIT_MANIFEST=PATH (read by kit.manifest)."""
    if value:
        os.environ["KIT_MANIFEST"] = value


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
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


if __name__ == "__main__":
    main()
