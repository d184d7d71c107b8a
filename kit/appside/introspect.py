"""Describe an app from inside its own interpreter; one JSON document on stdout.

    python introspect.py url_map 'pkg.app:create_app()'
        {"rules": [{"rule", "methods", "endpoint", "blueprint"}, ...]}
    python introspect.py metadata 'pkg.models:Base.metadata'
        {"tables": [{"name", "schema", "primary_key", "columns": [{"name", "type",
          "nullable", "primary_key"}]}, ...]}

Standalone on purpose: stdlib + the app's own packages only (never the kit), run by path with
the app's folder as cwd and on PYTHONPATH. Whatever the app prints while it is imported goes to
stderr, so stdout carries only the answer.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any


def resolve(spec: str) -> Any:
    """`package.module:attr.sub` → the object; a trailing `()` calls it (factories)."""
    module_name, _, attr = spec.partition(":")
    call = attr.endswith("()")
    if call:
        attr = attr[:-2]
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj() if call else obj


def url_map(spec: str) -> dict[str, Any]:
    app = resolve(spec)
    rules = getattr(getattr(app, "url_map", None), "iter_rules", None)
    if rules is None:
        raise TypeError(f"{spec} is not a Flask app (no url_map)")
    out = []
    for rule in rules():
        endpoint = rule.endpoint
        blueprint = endpoint.rpartition(".")[0] or None
        out.append(
            {
                "rule": rule.rule,
                "methods": sorted(rule.methods or ()),
                "endpoint": endpoint,
                "blueprint": blueprint,
            }
        )
    return {"rules": sorted(out, key=lambda r: (r["rule"], r["endpoint"]))}


def metadata(spec: str) -> dict[str, Any]:
    md = resolve(spec)
    if not hasattr(md, "sorted_tables"):
        raise TypeError(f"{spec} is not SQLAlchemy MetaData (no sorted_tables)")
    tables = []
    for table in md.sorted_tables:  # dependency order: parents first
        columns = []
        for c in table.columns:
            try:
                type_name = str(c.type)
            except Exception:  # noqa: BLE001 - some types only compile for a dialect
                type_name = type(c.type).__name__
            columns.append(
                {
                    "name": c.name,
                    "type": type_name,
                    "nullable": bool(c.nullable),
                    "primary_key": bool(c.primary_key),
                }
            )
        tables.append(
            {
                "name": table.name,
                "schema": table.schema,
                "primary_key": [c.name for c in table.primary_key.columns],
                "columns": columns,
            }
        )
    return {"tables": tables}


COMMANDS = {"url_map": url_map, "metadata": metadata}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in COMMANDS:
        print(f"usage: introspect.py {{{'|'.join(COMMANDS)}}} IMPORT_PATH", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    answer, sys.stdout = sys.stdout, sys.stderr  # the app's prints must not corrupt the JSON
    result = COMMANDS[argv[0]](argv[1])
    answer.write(json.dumps(result))
    answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
