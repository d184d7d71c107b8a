"""What a monolith is made of, read from the outside: its routes (Flask url_map, in the app's
own interpreter, or its OpenAPI document) and its tables (reflection of its database).
`kit init` writes a starting manifest from it (`render_manifest`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kit.manifest import SAFE_METHODS

#: read by the kit, not taken over: Alembic's bookkeeping and the kit's own capture tables
_SYSTEM_TABLE = re.compile(r"^(alembic_version.*|_cdc_.*|sqlite_.*)$")
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})


class InventoryError(ValueError):
    """The monolith could not be read; the message says what and how to fix it."""


@dataclass(frozen=True)
class Route:
    """One endpoint of the monolith: method, Flask-style path, and the group it belongs to
    (its blueprint, its module, or its OpenAPI tag)."""

    method: str
    path: str
    group: str

    @property
    def kind(self) -> str:
        """GET/HEAD read; everything else writes (docs/manifest.md)."""
        return "read" if self.method in SAFE_METHODS else "write"


@dataclass(frozen=True)
class TableInfo:
    name: str
    primary_key: tuple[str, ...]
    columns: int
    version_table: bool = False  # Alembic's bookkeeping (one `version_num` column)


#: GET routes that serve an API description: a readiness check that needs no credentials
_SPEC_PATH = re.compile(r"/(openapi|swagger|spec|api-docs)[^/<]*\.(json|ya?ml)$")


def spec_route(routes: Sequence[Route]) -> str | None:
    """The path of a GET route serving the app's OpenAPI document, if it has one."""
    for r in routes:
        if r.method == "GET" and "<" not in r.path and _SPEC_PATH.search(r.path):
            return r.path
    return None


def migrations_of(cwd: Path, tables: Sequence[TableInfo], root: Path) -> list[str]:
    """`[monolith.migrations]` lines when the app's folder has an `alembic.ini`: the ini, and
    the version table found in its database (a table holding only `version_num`)."""
    ini = cwd / "alembic.ini"
    if not ini.is_file():
        return []
    import os

    found = [t.name for t in tables if t.version_table]
    table = "alembic_version" if "alembic_version" in found or not found else found[0]
    note = (
        f"found in the database{' (others: ' + ', '.join(found[1:]) + ')' if len(found) > 1 else ''}"
        if found
        else "Alembic's default: check the version_table of its env.py"
    )
    return [
        "",
        f"[monolith.migrations]                 # its own Alembic environment (found {ini.name})",
        f"ini = {_toml_str(os.path.relpath(ini, root))}",
        f"version_table = {_toml_str(table)}    # {note}",
    ]


def routes_of_url_map(rules: Iterable[Mapping[str, Any]]) -> list[Route]:
    """Routes from `kit/appside/introspect.py url_map` (static files left out)."""
    out = []
    for rule in rules:
        endpoint = str(rule.get("endpoint") or "")
        if endpoint == "static" or endpoint.endswith(".static"):
            continue
        group = rule.get("blueprint") or endpoint.rpartition(".")[0] or "(app)"
        for method in rule.get("methods", ()):
            if method not in _IGNORED_METHODS:
                out.append(Route(method, str(rule["rule"]), str(group)))
    return sorted(out, key=lambda r: (r.group, r.path, r.method))


def routes_of_openapi(document: Mapping[str, Any]) -> list[Route]:
    """Routes from an OpenAPI document: `{id}` becomes `<id>`, grouped by the first tag (or
    the first path segment)."""
    out = []
    for path, item in (document.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        flask_path = re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", r"<\1>", path)
        for method, op in item.items():
            m = method.upper()
            if m in _IGNORED_METHODS or m not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                continue
            tags = op.get("tags") if isinstance(op, dict) else None
            first = path.strip("/").split("/")[0] or "(root)"
            out.append(Route(m, flask_path, str(tags[0]) if tags else first))
    return sorted(out, key=lambda r: (r.group, r.path, r.method))


def read_openapi(source: str, timeout: float = 10.0) -> dict[str, Any]:
    """The OpenAPI document at an http(s) URL or in a local file."""
    try:
        if source.startswith(("http://", "https://")):
            import httpx

            response = httpx.get(source, timeout=timeout)
            response.raise_for_status()
            document = response.json()
        else:
            document = json.loads(Path(source).read_text())
    except Exception as exc:  # noqa: BLE001 - any failure is the same advice
        raise InventoryError(f"cannot read the OpenAPI document at {source}: {exc}") from None
    if not isinstance(document, dict) or "paths" not in document:
        raise InventoryError(f"{source} is not an OpenAPI document (no 'paths')")
    return document


def tables_of(database_url: str) -> list[TableInfo]:
    """Every application table of the database, with its primary key (may be empty)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from kitcore.db import make_engine

    engine = make_engine(database_url)
    try:
        inspector = inspect(engine)
        out = []
        for name in sorted(inspector.get_table_names()):
            if _SYSTEM_TABLE.match(name):
                continue
            pk = inspector.get_pk_constraint(name).get("constrained_columns") or []
            columns = [c["name"] for c in inspector.get_columns(name)]
            out.append(TableInfo(name, tuple(pk), len(columns), columns == ["version_num"]))
        return out
    except SQLAlchemyError as exc:
        raise InventoryError(f"cannot reflect the monolith database: {exc}") from None
    finally:
        engine.dispose()


def _toml_str(value: str | bool) -> str:
    """A TOML value: true/false, or a basic string (a JSON string is one for these values)."""
    return ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)


def endpoint_lines(routes: Sequence[Route]) -> list[str]:
    """`{ methods = [...], path = ..., kind = ... }` items, one per method."""
    return [
        f'  {{ methods = [{_toml_str(r.method)}], path = {_toml_str(r.path)}, kind = "{r.kind}" }},'
        for r in routes
    ]


def _service_name(group: str) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", group.rsplit(".", 1)[-1].lower()).strip("_")
    return name if re.match(r"^[a-z]", name) and name != "monolith" else f"svc_{name or 'x'}"


def render_manifest(
    monolith: Mapping[str, str | bool],
    routes: Sequence[Route],
    tables: Sequence[TableInfo],
    source: str,
    extra: Sequence[str] = (),
) -> str:
    """A starting kit.toml: the monolith's run keys (and `extra` lines after them), the
    endpoint inventory by group with a commented `[services.<group>]` suggestion each, and
    the tables (keys or their absence); Alembic version tables are left out."""
    lines = [
        f"# Migration manifest written by `kit init` on {datetime.now(UTC):%Y-%m-%d} from {source}",
        "# (format: docs/manifest.md). Next: `kit extract NAME --tables ... --endpoints ...` adds",
        "# a service and scaffolds it; or uncomment and edit a suggestion below.",
        "",
        "[kit]",
        'var_dir = "var"',
        "",
        "[monolith]",
    ]
    lines += [f"{key} = {_toml_str(value)}" for key, value in monolith.items()]
    lines += list(extra)
    lines += [
        "",
        "[proxy]",
        "# who a client is, for canary stickiness and read-your-writes: a hash of its",
        "# credentials (requests without them: the client address)",
        'client_key = { hash_header = "Authorization" }',
    ]
    lines += ["", "# ---- endpoints of the monolith, by blueprint/module " + "-" * 38]
    groups: dict[str, list[Route]] = {}
    for r in routes:
        groups.setdefault(r.group, []).append(r)
    for group, members in groups.items():
        name = _service_name(group)
        shown = ",".join(f"{r.method} {r.path}" for r in members[:3])
        more = ",..." if len(members) > 3 else ""
        lines += ["#", f"# {group}:"]
        lines += [f"#   {r.method:<7}{r.path:<40}{r.kind}" for r in members]
        lines += [
            f'# suggestion (or: kit extract {name} --tables T1,T2 --endpoints "{shown}{more}"):',
            f"# [services.{name}]",
            '# url = "http://127.0.0.1:8001"',
            f'# database_url = "${{{name.upper()}_DATABASE_URL:-sqlite:///var/{name}.db}}"',
            f'# mapping = "services/{name}/mapping.toml"',
            "# tables = []",
            "# endpoints = [",
        ]
        lines += ["# " + ln for ln in endpoint_lines(members)]
        lines += ["# ]"]
    lines += ["", "# ---- tables of the monolith database (primary key) " + "-" * 38, "#"]
    tables = [t for t in tables if not t.version_table]
    width = max((len(t.name) for t in tables), default=0)
    for t in tables:
        if t.primary_key:
            lines.append(f"#   {t.name:<{width}}  ({', '.join(t.primary_key)})")
        else:
            lines.append(
                f"#   {t.name:<{width}}  NO PRIMARY KEY: declare the key a service will use "
                f"(kit extract ... --key {t.name}=COLUMN[,COLUMN])"
            )
    return "\n".join(lines) + "\n"
