"""Run an app's Alembic environment in the app's own interpreter (never imports the kit).

`<app python> alembic_env.py '<json request>'` with the request
`{verb, script_location, ini, version_opts, revision}` and the database URL in
$KIT_ALEMBIC_URL (never on the command line, where `ps` shows it); verbs:

- `upgrade` / `downgrade`: move the database to `revision`; prints `{"done": verb}`.
- `tables`: the environment's target metadata, `{"tables": {name: [columns]}}`, read the way
  autogenerate reads it (env.py runs against an in-memory SQLite connection, no steps).

The URL is handed to env.py every way one looks for it: `config.attributes["url"]`,
`sqlalchemy.url`, and (by the kit) the app's database variable. Errors go to stderr with a
non-zero exit; stdout carries exactly one JSON document.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from argparse import Namespace
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine
from sqlalchemy.pool import StaticPool


def _config(req: dict[str, Any], url: str) -> Config:
    opts = Namespace(quiet=True)
    config = Config(req["ini"], cmd_opts=opts) if req.get("ini") else Config(cmd_opts=opts)
    config.set_main_option("script_location", req["script_location"])
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["url"] = url
    config.attributes["version_table"] = req["version_opts"]["version_table"]
    return config


def _tables(req: dict[str, Any]) -> dict[str, list[str]]:
    config = _config(req, "sqlite://")
    script = ScriptDirectory.from_config(config)
    engine = create_engine("sqlite://", poolclass=StaticPool)
    try:
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            with EnvironmentContext(config, script, fn=lambda _rev, _ctx: []) as env:
                script.run_env()
                metadata = env.get_context().opts.get("target_metadata")
    finally:
        engine.dispose()
    found: list[MetaData] = (
        list(metadata) if isinstance(metadata, list | tuple) else [metadata] if metadata else []
    )
    return {
        name: [c.name for c in table.columns] for md in found for name, table in md.tables.items()
    }


def main(argv: list[str]) -> int:
    req = json.loads(argv[1])
    req["url"] = os.environ.get("KIT_ALEMBIC_URL", "sqlite://")
    verb = req["verb"]
    with contextlib.redirect_stdout(sys.stderr):  # env.py may print: stdout is the answer
        out = _answer(req, verb)
    if out is None:
        print(f"unknown verb {verb!r}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


def _answer(req: dict[str, Any], verb: str) -> dict[str, Any] | None:
    if verb == "tables":
        out: dict[str, Any] = {"tables": _tables(req)}
    elif verb in ("upgrade", "downgrade"):
        move = command.upgrade if verb == "upgrade" else command.downgrade
        move(_config(req, req["url"]), req["revision"])
        out = {"done": verb}  # the kit reads the revision itself (no driver guess here)
    else:
        return None
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv))
