"""Run code that needs an app's own code in that app's interpreter, never in the kit's.

A team's monolith has its own virtualenv, working folder and environment; the kit must not
have to import it (its dependencies are not the kit's). What needs the app's code (its Flask
url_map, its SQLAlchemy metadata, its Alembic env.py) is a standalone script in `kit/appside/`
run as `<app python> <script> <args>` with the app's folder as cwd and first on PYTHONPATH.
The script prints one JSON document on stdout. `process_env` is also what `kit up` gives the
app's servers, so a module path means the same thing to both.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APPSIDE_DIR = Path(__file__).resolve().parent / "appside"


class AppScriptError(RuntimeError):
    """An app-side script could not run or failed; the message names the interpreter, the
    folder and the script's last stderr lines (e.g. the module the app's venv lacks)."""


@dataclass(frozen=True)
class AppRuntime:
    """Where and how one app's code runs (built from a manifest app spec: `spec.runtime`)."""

    name: str
    python: str
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)  # extra env + {database_env: url}


def app_variables(rt: AppRuntime, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the app adds to `base` (default: our environment): its variables, and its cwd
    first on PYTHONPATH so `pkg.app:create_app()` resolves from the app's folder."""
    base = os.environ if base is None else base
    inherited = rt.env.get("PYTHONPATH", base.get("PYTHONPATH", ""))
    paths = [str(rt.cwd)] + [p for p in inherited.split(os.pathsep) if p]
    return {**rt.env, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def process_env(rt: AppRuntime, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The app's whole environment: `base` (default: ours) + `app_variables`."""
    base = os.environ if base is None else base
    return {**base, **app_variables(rt, base)}


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_app_script(rt: AppRuntime, script: str, *args: str, timeout: float = 120) -> Any:
    """Run kit/appside/<script> in the app's interpreter; its parsed JSON stdout, or
    AppScriptError with the script's stderr tail."""
    path = APPSIDE_DIR / script
    if not path.is_file():
        raise ValueError(f"no app-side script {script!r} in {APPSIDE_DIR}")
    where = f"{rt.name}: {script} {' '.join(args)} in {rt.python} (cwd {rt.cwd})"
    try:
        done = subprocess.run(
            [rt.python, str(path), *args],
            cwd=rt.cwd,
            env=process_env(rt),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        missing = rt.python if not Path(rt.python).exists() else rt.cwd
        raise AppScriptError(f"{where}: {missing} does not exist ({exc.strerror})") from None
    except NotADirectoryError as exc:
        raise AppScriptError(f"{where}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise AppScriptError(f"{where}: no answer within {timeout:.0f}s") from None
    if done.returncode != 0:
        raise AppScriptError(f"{where} failed (exit {done.returncode}):\n{_tail(done.stderr)}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AppScriptError(
            f"{where} printed no JSON document:\n{_tail(done.stdout)}\n{_tail(done.stderr)}"
        ) from None
