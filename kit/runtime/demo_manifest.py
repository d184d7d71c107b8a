"""A demo manifest: the repository's `kit.toml`, moved to a fresh folder and free ports.

Everything that identifies a place — ports, database URLs, the var folder, the event log,
the topic prefix — is replaced so the demo never collides with a running `kit up` or with
another demo; everything that describes the migration (services, tables, endpoints,
mappings, parity rules) is kept, so the demo runs exactly what the manifest says. Guard
sample thresholds are lowered so that a few seconds of traffic are enough evidence.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kitcore.net import free_port


def repo_manifest() -> Path:
    """The repository's kit.toml (next to the `kit` package)."""
    return Path(__file__).resolve().parent.parent.parent / "kit.toml"


def _key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() else _value(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: Mapping[str, Any]) -> str:
    """Enough TOML for manifests: tables, scalars, arrays and inline tables."""
    lines: list[str] = []

    def table(prefix: str, body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in body.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not tables):
            lines.append(f"\n[{prefix}]")
        for k, v in scalars.items():
            if isinstance(v, list) and v and all(isinstance(i, Mapping) for i in v):
                items = "".join(f"\n  {_value(i)}," for i in v)
                lines.append(f"{_key(k)} = [{items}\n]")
            else:
                lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in tables.items():
            table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)

    table("", data)
    return "\n".join(lines).lstrip() + "\n"


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


#: Keys of an app section that are paths relative to the manifest's folder.
_APP_PATHS = ("python", "venv", "mapping")
_MIGRATION_PATHS = ("script_location", "ini")


def rebase_app(raw: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """An app section moved out of `base`: its folder (`cwd`, default `base`) and every other
    relative path made absolute, so the app runs exactly as from the original manifest."""

    def absolute(section: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        out = dict(section)
        for key in keys:
            if key in out and not Path(out[key]).is_absolute():
                out[key] = str(base / out[key])
        return out

    app = absolute(raw, _APP_PATHS)
    app["cwd"] = str(base / app.get("cwd", "."))
    if isinstance(app.get("migrations"), Mapping):
        app["migrations"] = absolute(app["migrations"], _MIGRATION_PATHS)
    return app


def write_demo_manifest(
    folder: Path,
    *,
    template: Path | None = None,
    database_urls: Mapping[str, str] | None = None,
    kafka_bootstrap: str | None = None,
    parity_min_samples: int = 8,
    canary_stages: tuple[int, ...] = (10, 50),
    extra_guards: Mapping[str, Any] | None = None,
) -> Path:
    """Write `folder/kit.toml` from the template and return its path.

    `database_urls` maps `monolith`, a service name or `state`/`routes`/`parity` to a URL;
    anything not given is an SQLite file in `folder/var`. `kafka_bootstrap` switches the
    transport to Kafka with a topic prefix no other run uses.
    """
    template = template or repo_manifest()
    data = tomllib.loads(template.read_text())
    base = template.resolve().parent
    urls = dict(database_urls or {})
    folder = folder.resolve()
    var = folder / "var"

    def db(name: str, file: str) -> str:
        return urls.get(name) or f"sqlite:///{var / file}"

    data["kit"] = {"var_dir": str(var), "state_url": db("state", "kit.db")}
    monolith = rebase_app(data["monolith"], base)
    monolith.update(url=_url(free_port()), database_url=db("monolith", "monolith.db"))
    data["monolith"] = monolith
    proxy = dict(data.get("proxy", {}))
    proxy.update(
        listen=f"127.0.0.1:{free_port()}",
        admin=f"127.0.0.1:{free_port()}",
        store_url=db("routes", "routes.db"),
        token_file=str(var / "admin-token"),
    )
    data["proxy"] = proxy
    transport = dict(data.get("transport", {}))
    transport.update(log_dir=str(var / "cdc-log"), topic_prefix=f"demo{uuid.uuid4().hex[:8]}")
    if kafka_bootstrap:
        transport.update(kind="kafka", bootstrap_servers=kafka_bootstrap)
    else:
        transport["kind"] = "embedded"
        transport.pop("bootstrap_servers", None)
    data["transport"] = transport
    parity = dict(data.get("parity", {}))
    parity["stats_url"] = db("parity", "parity-stats.db")
    data["parity"] = parity
    guards = dict(data.get("guards", {}))
    guards.update(parity_min_samples=parity_min_samples, canary_stages=list(canary_stages))
    guards.update(extra_guards or {})
    data["guards"] = guards
    services = {}
    for name, raw in data.get("services", {}).items():
        service = rebase_app(raw, base)
        service.update(url=_url(free_port()), database_url=db(name, f"{name}.db"))
        services[name] = service
    data["services"] = services
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kit.toml"
    path.write_text(
        "# Generated by `kit demo` from " + str(template) + " (free ports, fresh folder).\n"
        + dump_toml(data)
    )  # fmt: skip
    return path
