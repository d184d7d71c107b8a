"""`kit seed` and the demo seed an app the way its team does: the manifest's `seed` argv, run
in the app's own interpreter, folder and environment (the kit never imports the app's seeding
code). Placeholders: those of `command` plus `{database_url}`."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Sequence

from kit.appenv import process_env
from kit.manifest import AppSpec, Manifest
from kit.runtime.plan import placeholders


class SeedFailed(RuntimeError):
    """The app has no seed command, or it failed (the message carries its output's tail)."""


def seed_argv(spec: AppSpec, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The app's `seed` argv with placeholders filled in, plus `extra` arguments."""
    if spec.seed is None:
        raise SeedFailed(
            f"the manifest has no seed command for {spec.runtime.name}: add "
            f'seed = ["{{python}}", "-m", "yourapp.seed", "{{database_url}}"] to its section'
        )
    values = placeholders(spec, spec.runtime.python)
    return (*(arg.format(**values) for arg in spec.seed), *extra)


def run_seed(
    spec: AppSpec,
    extra: Sequence[str] = (),
    *,
    database_url: str | None = None,
    capture: bool = False,
    timeout: float | None = None,
) -> str:
    """Run the seed command (against `database_url` when given); its output when `capture`,
    else it goes straight to our terminal. SeedFailed when it exits non-zero."""
    if database_url is not None:
        spec = dataclasses.replace(spec, database_url=database_url)
    argv = seed_argv(spec, extra)
    rt = spec.runtime
    try:
        done = subprocess.run(
            argv,
            cwd=rt.cwd,
            env=process_env(rt),
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            text=True,
            timeout=timeout,
            check=False,
        )
    except OSError as exc:
        raise SeedFailed(f"cannot run {argv[0]} in {rt.cwd}: {exc}") from None
    output = done.stdout or ""
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise SeedFailed(
            f"{' '.join(argv)} exited with {done.returncode}" + (f":\n{tail}" if tail else "")
        )
    if not capture:
        sys.stdout.flush()
    return output


def seed_monolith(
    m: Manifest,
    extra: Sequence[str] = (),
    *,
    database_url: str | None = None,
    migrate: bool = True,
    capture: bool = False,
) -> str:
    """What `kit seed` and the demo do: the monolith's schema to head (as `kit db upgrade`),
    then its seed command; the command's output when `capture`."""
    target = database_url or m.monolith.database_url
    if migrate:
        from sqlalchemy.exc import SQLAlchemyError

        from kit.appdb import app_database
        from kit.appenv import AppScriptError
        from kit.manifest import ManifestError
        from kit.migrations_spec import MigrationRefused

        try:
            app_database(m, "monolith", target).upgrade()
        except (ManifestError, MigrationRefused, AppScriptError, SQLAlchemyError) as exc:
            raise SeedFailed(
                f"cannot upgrade the monolith's schema before seeding: {exc}"
            ) from None
    return run_seed(m.monolith, extra, database_url=target, capture=capture)
