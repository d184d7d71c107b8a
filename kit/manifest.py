"""The migration manifest (`kit.toml`): one declarative file, the single source of truth.

It describes the monolith, each extracted service (URL, database, the endpoints and tables it
takes over, its mapping and parity rules), the proxy, the event transport and the guard-rail
thresholds. The proxy configuration, the CDC pipelines and the parity rules are all derived
from it (`proxy_config`, `forward_pipeline`, `reverse_pipeline`, `parity_rules`), so nothing
is configured twice. Format: docs/manifest.md.

Loading validates the structure and collects *every* problem (`ManifestError.problems`);
`check_manifest` additionally compares the manifest with reality: the monolith's routes
(Flask url_map through `app`, else its `/openapi.json`), the monolith schema (`metadata`
import path, else the reflected database), the service schemas and the mappings.
"""

from __future__ import annotations

import os
import re
import shlex
import string
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kit.migrations_spec import DEFAULT_VERSION_TABLE, MigrationsSpec

MANIFEST_ENV = "KIT_MANIFEST"
DEFAULT_MANIFEST = "kit.toml"
TRANSPORT_KINDS = ("embedded", "kafka")
ENDPOINT_KINDS = ("read", "write")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HTTP_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VAR = re.compile(r"<(?:[a-zA-Z_][a-zA-Z0-9_]*:)?[a-zA-Z_][a-zA-Z0-9_]*>")
_OPENAPI_VAR = re.compile(r"\{[a-zA-Z_][a-zA-Z0-9_]*\}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the manifest: where (a dotted path into kit.toml) and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ManifestError(ValueError):
    """The manifest cannot be used; `problems` lists every problem found, each precisely."""

    def __init__(self, problems: Sequence[Problem], path: Path | None = None) -> None:
        self.problems = list(problems)
        self.path = path
        head = f"{path}: " if path else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head}{len(self.problems)} problem(s) in the manifest:\n{lines}")


# ---------------------------------------------------------------------------------------------
# typed sections


@dataclass(frozen=True)
class KitSettings:
    var_dir: Path
    state_url: str


#: Placeholders a `command` may use; `seed` may also use `{database_url}`.
COMMAND_PLACEHOLDERS = frozenset({"python", "app", "host", "port", "bind", "workers", "threads"})
SEED_PLACEHOLDERS = COMMAND_PLACEHOLDERS | {"database_url"}


@dataclass(frozen=True)
class ReadyCheck:
    """When an app counts as ready: an HTTP GET of `path` answering `status`, or (path None)
    its port accepting a TCP connection, which works for an app without a readiness route."""

    path: str | None = None
    status: int = 200
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"ready.path must start with '/', got {self.path!r}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"ready.status must be an HTTP status, got {self.status}")
        if self.timeout_s <= 0:
            raise ValueError(f"ready_timeout must be positive, got {self.timeout_s}")

    def target(self, url: str) -> str:
        """What to probe for an app at `url`: `http://h:p/readyz`, or `tcp://h:p`."""
        if self.path is not None:
            return url.rstrip("/") + self.path
        parts = urlsplit(url)
        return f"tcp://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


@dataclass(frozen=True, kw_only=True)
class AppSpec:
    """How the team runs one app (the monolith or a service); keys of docs/manifest.md.

    Everything that needs the app's code runs in *its* interpreter (`runtime`,
    `kit.appenv.run_app_script`); the kit never imports the app.
    """

    url: str
    database_url: str
    app: str | None = None
    metadata: str | None = None
    openapi: str = "/openapi.json"
    workers: int = 2
    threads: int = 4
    python: str | None = None  # None: the kit's own interpreter
    cwd: Path | None = None  # None: the manifest folder (the parser always fills it in)
    command: tuple[str, ...] | None = None  # None: gunicorn on `app`
    env: Mapping[str, str] = field(default_factory=dict)
    database_env: str | None = None  # None: <NAME>_DATABASE_URL
    ready: ReadyCheck = field(default_factory=ReadyCheck)
    external: bool = False
    seed: tuple[str, ...] | None = None
    migrations: MigrationsSpec | None = None

    @property
    def app_name(self) -> str:
        raise NotImplementedError

    @property
    def database_variable(self) -> str:
        """The variable that carries `database_url` to the app (`CATALOG_DATABASE_URL`)."""
        return self.database_env or f"{self.app_name.upper()}_DATABASE_URL"

    @property
    def runtime(self) -> Any:
        """The app's `kit.appenv.AppRuntime`: interpreter, folder and environment."""
        from kit.appenv import AppRuntime

        return AppRuntime(
            name=self.app_name,
            python=self.python or sys.executable,
            cwd=self.cwd or Path.cwd(),
            env={**self.env, self.database_variable: self.database_url},
        )

    @property
    def ready_target(self) -> str:
        return self.ready.target(self.url)

    @property
    def openapi_url(self) -> str:
        """Where the app serves its OpenAPI document (`openapi` is a path or a full URL)."""
        if self.openapi.startswith(("http://", "https://")):
            return self.openapi
        return self.url.rstrip("/") + self.openapi


@dataclass(frozen=True, kw_only=True)
class MonolithSpec(AppSpec):
    @property
    def app_name(self) -> str:
        return "monolith"


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ProxySettings:
    listen: HostPort
    admin: HostPort
    store_url: str
    token_file: Path
    shadow_jsonl: Path | None = None
    error_template: str | None = None  # the app's error shape for the proxy's own errors
    # who a client is (canary buckets, read-your-writes pins): {header|cookie|hash_header = name}
    client_key: Mapping[str, str] | None = None
    read_your_writes: float | None = None  # seconds; None: derived from measured CDC lag
    # a differing shadowed GET/HEAD is re-checked on both sides this long after (0: never)
    recheck_after_s: float = 1.0
    # while an app refuses connections (restarting after a crash), requests wait this long
    # for it instead of getting 502 (nothing was sent: writes wait too; 0: off)
    connect_retry_s: float = 10.0


@dataclass(frozen=True)
class TransportSpec:
    kind: str
    topic_prefix: str
    log_dir: Path
    partitions: int = 4
    bootstrap_servers: str | None = None
    # Kafka consumer groups: a group join takes about session_timeout_ms / 2 on Tansu (and a
    # rebalance up to session_timeout_ms on Kafka), so short values make cut-overs quick.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000


@dataclass(frozen=True)
class ParitySettings:
    """`[parity]`: statistics, rules (inline and `rules_file`, which `kit parity learn-noise
    --save` writes), credentials (`auth`: a command printing headers), what is redacted, and
    where a listing's ids are (`ids`: endpoint -> JSONPath)."""

    stats_url: str
    rules: Mapping[str, Any] = field(default_factory=dict)
    recordings_dir: Path | None = None
    sample_rate: float = 0.1
    rules_file: Path | None = None
    auth: tuple[str, ...] | None = None
    redact_fields: tuple[str, ...] = ()
    redact_patterns: tuple[str, ...] | None = None  # None: the built-ins (kitcore.redact)
    ids: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GuardSettings:
    """Guard-rail thresholds (see docs/playbook.md)."""

    parity_min_samples: int = 20
    parity_max_mismatch_rate: float = 0.0
    cdc_max_lag_seconds: float = 5.0
    canary_stages: tuple[int, ...] = (10, 50)
    verify_attempts: int = 5
    drain_timeout_seconds: float = 120.0


@dataclass(frozen=True)
class Endpoint:
    """One endpoint a service takes over: method + Flask-style pattern, read or write."""

    method: str
    path: str
    kind: str
    service: str

    @property
    def label(self) -> str:
        """The parity/dashboard name of the endpoint, e.g. `GET /products/<int:id>`."""
        return f"{self.method} {self.path}"

    @property
    def is_read(self) -> bool:
        return self.kind == "read"


@dataclass(frozen=True, kw_only=True)
class ServiceSpec(AppSpec):
    name: str
    mapping_path: Path
    tables: tuple[str, ...]
    endpoints: tuple[Endpoint, ...]
    parity: Mapping[str, Any] = field(default_factory=dict)
    parity_rules_file: Path | None = None
    stop_reverse_cdc_on_retire: bool = True
    # read-only copies of reference data the service does not own: fed by CDC from the side
    # that owns the table's writes, never moved at `writes`, kept fed after `retire`
    replicas: tuple[str, ...] = ()
    # what says the service may take traffic (its schema at head, its dependencies up): the
    # playbook and the proxy's guard ask it before any route moves to the service
    traffic_ready: str = "/readyz"

    @property
    def app_name(self) -> str:
        return self.name

    @property
    def read_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.is_read)

    @property
    def write_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if not e.is_read)

    def mapping(self) -> Any:
        """The parsed mapping (cdc.mapping.MappingSpec); MappingError when it is invalid."""
        from cdc.mapping import load_mapping

        return load_mapping(self.mapping_path)


@dataclass(frozen=True)
class Manifest:
    path: Path | None
    root: Path
    kit: KitSettings
    monolith: MonolithSpec
    proxy: ProxySettings
    transport: TransportSpec
    parity: ParitySettings
    guards: GuardSettings
    services: Mapping[str, ServiceSpec]

    def service(self, name: str) -> ServiceSpec:
        """The named service; ManifestError naming the known ones otherwise."""
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "(none)"
            raise ManifestError(
                [Problem("services", f"unknown service {name!r}; the manifest has: {known}")],
                self.path,
            ) from None

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for s in self.services.values() for e in s.endpoints]

    def owner_of_table(self, table: str) -> str | None:
        """The service that takes `table` over (its `tables`; a replica never counts)."""
        for s in self.services.values():
            if table in s.tables:
                return s.name
        return None

    def replica_holders(self, table: str) -> list[str]:
        """The services that keep a read-only replica of `table`."""
        return [s.name for s in self.services.values() if table in s.replicas]


# ---------------------------------------------------------------------------------------------
# parsing helpers (each collects problems instead of stopping at the first)


def _expand(value: Any, env: Mapping[str, str]) -> Any:
    """`${NAME}` / `${NAME:-default}` in strings, recursively (so URLs can come from the env)."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            got = env.get(name)
            if got:
                return got
            if default is not None:
                return default
            raise KeyError(name)

        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    return value


class _Reader:
    """Reads typed values out of one TOML table, recording problems with their dotted path."""

    def __init__(self, data: Any, where: str, problems: list[Problem], root: Path) -> None:
        self.where = where
        self.problems = problems
        self.root = root
        if not isinstance(data, dict):
            self.problem("", "must be a table")
            data = {}
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        where = f"{self.where}.{key}" if key else self.where
        self.problems.append(Problem(where, message))

    def raw(self, key: str, default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                self.problem(key, "is required")
            return default
        return self.data[key]

    def str(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.raw(key, default, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(key, f"must be a non-empty string, got {value!r}")
            return default
        return value

    def int(self, key: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        value = self.raw(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(key, f"must be an integer, got {value!r}")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.problem(key, f"must be between {lo} and {hi}, got {value}")
            return default
        return value

    def float(self, key: str, default: float, lo: float = 0.0, hi: float | None = None) -> float:
        value = self.raw(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.problem(key, f"must be a number, got {value!r}")
            return default
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            self.problem(key, f"must be {bound}, got {value}")
            return default
        return float(value)

    def bool(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.problem(key, f"must be true or false, got {value!r}")
            return default
        return value

    def path(self, key: str, default: str | None = None, required: bool = False) -> Path | None:
        text = self.str(key, default, required)
        if text is None:
            return None
        p = Path(text)
        return p if p.is_absolute() else self.root / p

    def http_url(self, key: str, required: bool = True) -> str:
        value = self.str(key, required=required)
        if value is None:
            return "http://invalid"
        parts = urlsplit(value)
        problem = None
        if parts.scheme not in ("http", "https"):
            problem = "must be an http(s) URL"
        elif not parts.hostname:
            problem = "has no host"
        else:
            try:
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError:
                problem = "has an invalid port"
        if not problem and (parts.query or parts.fragment):
            problem = "must not have a query or fragment"
        if problem:
            self.problem(key, f"{problem}: {value!r}")
            return "http://invalid"
        return value.rstrip("/")

    def db_url(self, key: str, default: str | None = None, required: bool | None = None) -> str:
        value = self.str(key, default, default is None if required is None else required)
        if value is None:
            return "sqlite://"
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as exc:
            self.problem(key, f"is not a database URL ({exc}): {value!r}")
            return "sqlite://"
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            db = Path(url.database)
            if not db.is_absolute() and not url.database.startswith("file:"):
                return url.set(database=str(self.root / db)).render_as_string(hide_password=False)
        return value

    def host_port(self, key: str, default: str) -> HostPort:
        value = self.str(key, default) or default
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            self.problem(key, f"must look like HOST:PORT with a port 0..65535, got {value!r}")
            return HostPort("127.0.0.1", 0)
        return HostPort(host, int(port))

    def import_path(self, key: str) -> str | None:
        value = self.str(key)
        if value is not None and not re.fullmatch(r"[\w.]+:[\w.]+(\(\))?", value):
            self.problem(
                key, f"must look like 'package.module:attribute' or ':factory()': {value!r}"
            )
            return None
        return value

    def argv(self, key: str, placeholders: frozenset[str]) -> tuple[str, ...] | None:
        """A non-empty list of strings whose `{placeholders}` are all known."""
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
            self.problem(key, f"must be a non-empty list of strings (argv), got {value!r}")
            return None
        for arg in value:
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(arg) if f is not None}
            except ValueError as exc:
                self.problem(key, f"bad placeholder in {arg!r}: {exc}")
                return None
            unknown = names - placeholders
            if unknown:
                known = " ".join(f"{{{p}}}" for p in sorted(placeholders))
                self.problem(
                    key,
                    f"unknown placeholder(s) {', '.join(sorted(unknown))} in {arg!r}; "
                    f"known: {known} (write {{{{ and }}}} for literal braces)",
                )
                return None
        return tuple(value)

    def str_table(self, key: str) -> dict[str, str]:
        """A table of string values (environment variables)."""
        value = self.raw(key, {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.problem(key, f'must be a table of NAME = "value" strings, got {value!r}')
            return {}
        for k in value:
            if not _ENV_NAME.match(k):
                self.problem(key, f"{k!r} is not an environment variable name")
        return dict(value)

    def env_name(self, key: str) -> str | None:
        value = self.str(key)
        if value is not None and not _ENV_NAME.match(value):
            self.problem(key, f"must be an environment variable name, got {value!r}")
            return None
        return value

    def interpreter(self) -> str | None:
        """`python` (a path) or `venv` (a folder: its bin/python); relative to the manifest."""
        python, venv = self.path("python"), self.path("venv")
        if python is not None and venv is not None:
            self.problem("venv", "give either python or venv, not both")
            return None
        if venv is not None:
            return str(venv / "bin" / "python")
        return str(python) if python is not None else None

    def ready(self) -> ReadyCheck:
        raw = self.raw("ready", {"tcp": True})
        timeout = self.float("ready_timeout", 60.0, 0.1, 3600.0)
        where = "ready"
        if not isinstance(raw, dict):
            self.problem(
                where,
                f'must be {{ path = "/readyz", status = 200 }} or {{ tcp = true }}, got {raw!r}',
            )
            return ReadyCheck(timeout_s=timeout)
        extra = set(raw) - {"path", "status", "tcp"}
        if extra:
            self.problem(
                where, f"unknown key(s) {', '.join(sorted(extra))} (known: path, status, tcp)"
            )
        path, status, tcp = raw.get("path"), raw.get("status", 200), raw.get("tcp")
        if tcp is not None and tcp is not True:
            self.problem(f"{where}.tcp", f"must be true (or leave it out), got {tcp!r}")
        if tcp is True and ("path" in raw or "status" in raw):
            self.problem(where, "give either path (and status) or tcp = true, not both")
            return ReadyCheck(timeout_s=timeout)
        if tcp is None and path is None:
            self.problem(where, 'needs path = "/..." (HTTP GET) or tcp = true')
            return ReadyCheck(timeout_s=timeout)
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            self.problem(f"{where}.path", f"must be a path starting with '/', got {path!r}")
            return ReadyCheck(timeout_s=timeout)
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            self.problem(f"{where}.status", f"must be an HTTP status 100..599, got {status!r}")
            return ReadyCheck(timeout_s=timeout)
        return ReadyCheck(path=path, status=status, timeout_s=timeout)

    def migrations(self) -> MigrationsSpec | None:
        """`[<app>.migrations]`; None when the app has no Alembic (`kit db` then refuses)."""
        if "database" in self.data:
            self.raw("database")
            self.problem(
                "database",
                "was removed: name the app's own Alembic environment in "
                f"[{self.where}.migrations] script_location (or ini) and version_table",
            )
        raw = self.raw("migrations")
        if raw is None:
            return None
        r = _Reader(raw, f"{self.where}.migrations", self.problems, self.root)
        script, ini = r.path("script_location"), r.path("ini")
        table = r.str("version_table", DEFAULT_VERSION_TABLE) or DEFAULT_VERSION_TABLE
        r.unknown()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", table):
            r.problem(
                "version_table", f"must be a table name (optionally schema.table), got {table!r}"
            )
        if (script is None) == (ini is None):
            r.problem(
                "", "give exactly one of script_location (the Alembic folder) and ini (alembic.ini)"
            )
            return None
        return MigrationsSpec(script_location=script, ini=ini, version_table=table)

    def app_fields(self, default_openapi: str = "/openapi.json") -> dict[str, Any]:
        """The keys every app section shares (docs/manifest.md, "Running the apps")."""
        cwd = self.path("cwd") or self.root
        fields: dict[str, Any] = {
            "url": self.http_url("url"),
            "database_url": self.db_url("database_url"),
            "app": self.import_path("app"),
            "metadata": self.import_path("metadata"),
            "openapi": self.str("openapi", default_openapi) or default_openapi,
            "workers": self.int("workers", 2, 1, 64),
            "threads": self.int("threads", 4, 1, 64),
            "python": self.interpreter(),
            "cwd": cwd,
            "command": self.argv("command", COMMAND_PLACEHOLDERS),
            "env": self.str_table("env"),
            "database_env": self.env_name("database_env"),
            "ready": self.ready(),
            "external": self.bool("external", False),
            "seed": self.argv("seed", SEED_PLACEHOLDERS),
            "migrations": self.migrations(),
        }
        if not fields["openapi"].startswith(("/", "http://", "https://")):
            self.problem(
                "openapi", f"must be a path ('/openapi.json') or a URL, got {fields['openapi']!r}"
            )
        if not fields["app"] and not fields["command"] and not fields["external"]:
            if "app" not in self.data:  # a bad `app` is already a problem
                self.problem(
                    "app",
                    "is required to run the app (or give command = [...], or external = true)",
                )
        return fields

    def unknown(self, allowed_extra: Iterable[str] = ()) -> None:
        extra = set(self.data) - self.used - set(allowed_extra)
        for key in sorted(extra):
            self.problem(key, "unknown key")


def _parse_endpoints(raw: Any, service: str, problems: list[Problem]) -> tuple[Endpoint, ...]:
    from strangler_proxy.routes import RouteError, parse_pattern

    where = f"services.{service}.endpoints"
    if not isinstance(raw, list) or not raw:
        problems.append(Problem(where, "must be a non-empty list of {methods, path, kind}"))
        return ()
    out: list[Endpoint] = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            problems.append(Problem(here, "must be a table {methods, path, kind}"))
            continue
        extra = set(item) - {"methods", "method", "path", "kind"}
        if extra:
            problems.append(Problem(here, f"unknown key(s) {', '.join(sorted(extra))}"))
        methods = item.get("methods", item.get("method"))
        if isinstance(methods, str):
            methods = [methods]
        path = item.get("path")
        kind = item.get("kind")
        ok = True
        if not isinstance(path, str):
            problems.append(Problem(here, "path is required (a Flask-style pattern)"))
            ok = False
        else:
            try:
                parse_pattern(path)
            except RouteError as exc:
                problems.append(Problem(here, f"bad path {path!r}: {exc}"))
                ok = False
        if kind not in ENDPOINT_KINDS:
            problems.append(Problem(here, f"kind must be 'read' or 'write', got {kind!r}"))
            ok = False
        if not isinstance(methods, list) or not methods:
            problems.append(Problem(here, "methods must be a non-empty list like ['GET']"))
            continue
        for m in methods:
            method = str(m).upper()
            if method not in HTTP_METHODS:
                problems.append(Problem(here, f"unknown HTTP method {m!r}"))
                continue
            if ok and kind == "read" and method not in SAFE_METHODS:
                problems.append(
                    Problem(here, f"{method} {path} changes data: declare it with kind = 'write'")
                )
                continue
            if ok and kind == "write" and method in SAFE_METHODS:
                problems.append(
                    Problem(here, f"{method} {path} is a safe method: declare it kind = 'read'")
                )
                continue
            if ok:
                out.append(Endpoint(method, path, kind, service))
    return tuple(out)


def parse_manifest(
    data: Mapping[str, Any],
    root: Path,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Manifest:
    """Validate parsed TOML into a Manifest; ManifestError lists every structural problem."""
    problems: list[Problem] = []
    env = os.environ if env is None else env
    try:
        data = _expand(dict(data), env)
    except KeyError as exc:
        raise ManifestError(
            [Problem("(environment)", f"${{{exc.args[0]}}} is not set and has no default")], path
        ) from None
    top = set(data) - {"kit", "monolith", "proxy", "transport", "parity", "guards", "services"}
    for key in sorted(top):
        problems.append(Problem(key, "unknown section"))

    r = _Reader(data.get("kit", {}), "kit", problems, root)
    var_dir = r.path("var_dir", "var") or root / "var"
    kit = KitSettings(var_dir, r.db_url("state_url", f"sqlite:///{var_dir / 'kit.db'}"))
    r.unknown()

    r = _Reader(data.get("monolith"), "monolith", problems, root)
    monolith = MonolithSpec(**r.app_fields())
    r.unknown()

    r = _Reader(data.get("proxy", {}), "proxy", problems, root)
    proxy = ProxySettings(
        listen=r.host_port("listen", "127.0.0.1:8080"),
        admin=r.host_port("admin", "127.0.0.1:8081"),
        store_url=r.db_url("store_url", f"sqlite:///{var_dir / 'routes.db'}"),
        token_file=r.path("token_file", str(var_dir / "admin-token")) or var_dir / "admin-token",
        shadow_jsonl=r.path("shadow_jsonl"),
        error_template=r.str("error_template"),
        client_key=_client_key(r),
        read_your_writes=_read_your_writes(r),
        recheck_after_s=r.float("recheck_after_s", 1.0, 0.0, 60.0),
        connect_retry_s=r.float("connect_retry_s", 10.0, 0.0, 25.0),
    )
    if proxy.error_template is not None:
        from strangler_proxy.errors import parse_template

        try:
            parse_template(proxy.error_template)
        except ValueError as exc:
            r.problem("error_template", str(exc))
    r.unknown()

    r = _Reader(data.get("transport", {}), "transport", problems, root)
    kind = r.str("kind", "embedded") or "embedded"
    if kind not in TRANSPORT_KINDS:
        r.problem("kind", f"unknown transport {kind!r}; known: {', '.join(TRANSPORT_KINDS)}")
    prefix = r.str("topic_prefix") or default_topic_prefix(root)
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", prefix):
        r.problem("topic_prefix", f"must be letters, digits, '-' or '_', got {prefix!r}")
    servers = r.str("bootstrap_servers")
    if kind == "kafka" and not servers:
        r.problem("bootstrap_servers", "is required when kind = 'kafka' (host:port,...)")
    transport = TransportSpec(
        kind=kind,
        topic_prefix=prefix,
        log_dir=r.path("log_dir", str(var_dir / "cdc-log")) or var_dir / "cdc-log",
        partitions=r.int("partitions", 4, 1, 1024),
        bootstrap_servers=servers,
        session_timeout_ms=r.int("session_timeout_ms", 6000, 1000, 3_600_000),
        heartbeat_interval_ms=r.int("heartbeat_interval_ms", 1000, 100, 3_600_000),
    )
    if transport.heartbeat_interval_ms >= transport.session_timeout_ms:
        r.problem("heartbeat_interval_ms", "must be lower than session_timeout_ms")
    r.unknown()

    r = _Reader(data.get("parity", {}), "parity", problems, root)
    rules = r.raw("rules", {})
    parity = ParitySettings(
        stats_url=r.db_url("stats_url", f"sqlite:///{var_dir / 'parity-stats.db'}"),
        rules=rules if isinstance(rules, dict) else {},
        recordings_dir=r.path("recordings_dir"),
        sample_rate=r.float("sample_rate", 0.1, 0.0, 1.0),
        rules_file=r.path("rules_file"),
        **_parity_access(r),
    )
    _check_rules(parity.rules, "parity.rules", problems)
    r.unknown()

    r = _Reader(data.get("guards", {}), "guards", problems, root)
    stages_raw = r.raw("canary_stages", [10, 50])
    stages: tuple[int, ...] = (10, 50)
    if (
        not isinstance(stages_raw, list)
        or not stages_raw
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in stages_raw)
        or not all(0 < s < 100 for s in stages_raw)
        or list(stages_raw) != sorted(set(stages_raw))
    ):
        r.problem("canary_stages", f"must be increasing percents in 1..99, got {stages_raw!r}")
    else:
        stages = tuple(stages_raw)
    guards = GuardSettings(
        parity_min_samples=r.int("parity_min_samples", 20, 0, 10**9),
        parity_max_mismatch_rate=r.float("parity_max_mismatch_rate", 0.0, 0.0, 1.0),
        cdc_max_lag_seconds=r.float("cdc_max_lag_seconds", 5.0, 0.0),
        canary_stages=stages,
        verify_attempts=r.int("verify_attempts", 5, 1, 100),
        drain_timeout_seconds=r.float("drain_timeout_seconds", 120.0, 1.0),
    )
    r.unknown()

    services: dict[str, ServiceSpec] = {}
    # no service yet is fine: `kit init` writes such a manifest, `kit extract` adds them
    raw_services = data.get("services", {})
    if not isinstance(raw_services, dict):
        problems.append(Problem("services", "must be tables [services.<name>]"))
        raw_services = {}
    for name, raw in raw_services.items():
        if not _NAME.match(name) or name == "monolith":
            problems.append(Problem(f"services.{name}", "name must be lower-case, not 'monolith'"))
        r = _Reader(raw, f"services.{name}", problems, root)
        tables_raw = r.raw("tables", None, required=True)
        tables: tuple[str, ...] = ()
        if tables_raw is not None:
            if not isinstance(tables_raw, list) or not all(
                isinstance(t, str) and t for t in tables_raw
            ):
                r.problem("tables", f"must be a list of table names, got {tables_raw!r}")
            else:
                tables = tuple(tables_raw)
                for t in {t for t in tables if tables.count(t) > 1}:
                    r.problem("tables", f"table {t!r} is listed twice")
        replicas = _parse_replicas(r, tables)
        parity_rules = r.raw("parity", {})
        if not isinstance(parity_rules, dict):
            r.problem("parity", "must be a table of parity rules")
            parity_rules = {}
        parity_rules = dict(parity_rules)
        service_rules_file = _Reader(
            {"rules_file": parity_rules.pop("rules_file")} if "rules_file" in parity_rules else {},
            f"services.{name}.parity",
            problems,
            root,
        ).path("rules_file")
        _check_rules(parity_rules, f"services.{name}.parity", problems)
        services[name] = ServiceSpec(
            **r.app_fields(),
            name=name,
            mapping_path=r.path("mapping", required=True) or root / "missing-mapping.toml",
            tables=tables,
            endpoints=_parse_endpoints(r.raw("endpoints", None, True), name, problems),
            parity=parity_rules,
            parity_rules_file=service_rules_file,
            stop_reverse_cdc_on_retire=r.bool("stop_reverse_cdc_on_retire", True),
            replicas=replicas,
            traffic_ready=_traffic_ready(r),
        )
        if replicas and not tables:
            for e in services[name].write_endpoints:
                r.problem(
                    "endpoints",
                    f"{e.label} is declared kind = 'write', but {name!r} owns no table (only "
                    f"the replicas {', '.join(replicas)}, which never accept writes): declare "
                    "the tables it writes in tables = [...] or leave the endpoint to the monolith",
                )
        r.unknown()

    problems.extend(_ownership_problems(services.values()))
    _url_clashes(monolith, services.values(), proxy, problems)
    if problems:
        raise ManifestError(problems, path)
    return Manifest(path, root, kit, monolith, proxy, transport, parity, guards, services)


def _parse_replicas(r: _Reader, tables: tuple[str, ...]) -> tuple[str, ...]:
    """`replicas = [...]`: tables the service keeps a read-only copy of (never its own)."""
    raw = r.raw("replicas", [])
    if not isinstance(raw, list) or not all(isinstance(t, str) and t for t in raw):
        r.problem("replicas", f"must be a list of table names, got {raw!r}")
        return ()
    replicas = tuple(raw)
    for t in sorted({t for t in replicas if replicas.count(t) > 1}):
        r.problem("replicas", f"table {t!r} is listed twice")
    for t in replicas:
        if t in tables:
            r.problem(
                "replicas",
                f"table {t!r} is both in tables (the service takes over its writes) and in "
                "replicas (a read-only copy): a service owns a table or replicates it, not both",
            )
    return tuple(dict.fromkeys(replicas))


def _parity_access(r: _Reader) -> dict[str, Any]:
    """The `[parity]` keys for credentials, redaction and id discovery, validated."""
    from kitcore.redact import TextScrubber
    from parity.paths import PathSyntaxError, parse_pattern

    def strings(key: str) -> tuple[str, ...] | None:
        value = r.raw(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            r.problem(key, f"must be a list of strings, got {value!r}")
            return None
        return tuple(value)

    auth_raw = r.raw("auth")
    auth: tuple[str, ...] | None = None
    if isinstance(auth_raw, str) and auth_raw.strip():
        auth = tuple(shlex.split(auth_raw))
    elif auth_raw is not None:
        auth = strings("auth")
        if not auth:
            r.problem("auth", "must be a command: a string or a list of strings")
    patterns = strings("redact_patterns")
    if patterns is not None:
        try:
            TextScrubber(patterns)
        except ValueError as exc:
            r.problem("redact_patterns", str(exc))
    ids = r.raw("ids", {})
    if not isinstance(ids, dict):
        r.problem("ids", "must be a table of endpoint = JSONPath, e.g. '$.data[*].id'")
        ids = {}
    for endpoint, path in ids.items():
        try:
            parse_pattern(path if isinstance(path, str) else "")
        except PathSyntaxError as exc:
            r.problem(f"ids.{endpoint!r}", str(exc))
    return {
        "auth": auth,
        "redact_fields": strings("redact_fields") or (),
        "redact_patterns": patterns,
        "ids": dict(ids),
    }


def _check_rules(rules: Any, where: str, problems: list[Problem]) -> None:
    if not rules:
        return
    from parity.rules import RulesError, RuleSet

    try:
        RuleSet.from_dict(rules)
    except RulesError as exc:
        problems.append(Problem(where, f"invalid parity rules: {exc}"))


def _ownership_problems(services: Iterable[ServiceSpec]) -> list[Problem]:
    """Every endpoint (method + pattern) and every table has at most one owner."""
    problems: list[Problem] = []
    endpoint_owner: dict[tuple[str, str], str] = {}
    table_owner: dict[str, str] = {}
    for s in services:
        seen: set[tuple[str, str]] = set()
        for e in s.endpoints:
            key = (e.method, _shape(e.path))
            if key in seen:
                problems.append(
                    Problem(f"services.{s.name}.endpoints", f"{e.label} is declared twice")
                )
            seen.add(key)
            other = endpoint_owner.get(key)
            if other is not None and other != s.name:
                problems.append(
                    Problem(
                        f"services.{s.name}.endpoints",
                        f"{e.label} is already owned by service {other!r} (duplicate ownership)",
                    )
                )
            endpoint_owner.setdefault(key, s.name)
        for t in s.tables:
            other = table_owner.get(t)
            if other is not None and other != s.name:
                problems.append(
                    Problem(
                        f"services.{s.name}.tables",
                        f"table {t!r} is already owned by service {other!r} (duplicate ownership)",
                    )
                )
            table_owner.setdefault(t, s.name)
    return problems


def _url_clashes(
    monolith: MonolithSpec,
    services: Iterable[ServiceSpec],
    proxy: ProxySettings,
    problems: list[Problem],
) -> None:
    seen: dict[str, str] = {}
    for where, url in [("monolith.url", monolith.url)] + [
        (f"services.{s.name}.url", s.url) for s in services
    ]:
        if url == "http://invalid":
            continue
        p = urlsplit(url)
        netloc = f"{p.hostname}:{p.port or (443 if p.scheme == 'https' else 80)}"
        if netloc in seen:
            problems.append(Problem(where, f"{url} is the same address as {seen[netloc]}"))
        seen.setdefault(netloc, where)
    for where, hp in (("proxy.listen", proxy.listen), ("proxy.admin", proxy.admin)):
        if hp.port and f"{hp.host}:{hp.port}" in seen:
            problems.append(Problem(where, f"{hp} is also {seen[f'{hp.host}:{hp.port}']}"))
    if proxy.listen.port and proxy.listen == proxy.admin:
        problems.append(Problem("proxy.admin", "must differ from proxy.listen"))


def manifest_path(path: str | Path | None = None) -> Path:
    """The explicit path, else $KIT_MANIFEST, else ./kit.toml."""
    return Path(path or os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)


def _traffic_ready(r: _Reader) -> str:
    path = r.str("traffic_ready", "/readyz") or "/readyz"
    if not path.startswith("/"):
        r.problem("traffic_ready", f"must be a path starting with '/', got {path!r}")
        return "/readyz"
    return path


def traffic_ready_paths(m: Manifest) -> dict[str, str]:
    """Each service's readiness path for the proxy's guard (`traffic_ready`)."""
    return {name: s.traffic_ready for name, s in m.services.items()}


def default_topic_prefix(root: Path) -> str:
    """Topics are named after the project when the manifest does not say: its folder's name
    reduced to the characters a topic prefix allows (`kit` when nothing is left)."""
    slug = re.sub(r"[^A-Za-z0-9_\-]+", "-", root.resolve().name).strip("-")
    return slug[:60] or "kit"


def load_manifest(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Manifest:
    """Read and validate a manifest file; relative paths are relative to its folder."""
    p = manifest_path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ManifestError(
            [Problem("(file)", f"{p} does not exist (pass --manifest or set {MANIFEST_ENV})")], p
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError([Problem("(file)", f"invalid TOML: {exc}")], p) from None
    return parse_manifest(data, p.resolve().parent, p, env)


# ---------------------------------------------------------------------------------------------
# derived configuration (one source of truth)


def _client_key(r: _Reader) -> Mapping[str, str] | None:
    """`[proxy] client_key`, checked by the proxy's own parser (one definition of valid)."""
    raw = r.raw("client_key")
    if raw is None:
        return None
    from strangler_proxy.policy import ClientKeySpec

    try:
        spec = ClientKeySpec.from_mapping(raw)
    except ValueError as exc:
        r.problem("client_key", str(exc))
        return None
    return {spec.kind: spec.name}


def _read_your_writes(r: _Reader) -> float | None:
    """`[proxy] read_your_writes`: "auto" (default) or seconds (0 turns the pins off)."""
    raw = r.raw("read_your_writes", "auto")
    if raw == "auto":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
        r.problem("read_your_writes", f'must be "auto" or seconds >= 0, got {raw!r}')
        return None
    return float(raw)


def proxy_config(m: Manifest, **overrides: Any) -> Any:
    """The strangler proxy's ProxyConfig: upstreams and declared routes from the manifest."""
    from strangler_proxy.config import ProxyConfig, ShadowSettings, Timeouts
    from strangler_proxy.routes import build_route

    upstreams = {"monolith": m.monolith.url, **{s.name: s.url for s in m.services.values()}}
    routes = tuple(build_route(e.method, e.path, e.service, "monolith") for e in m.endpoints)
    kwargs: dict[str, Any] = {
        "upstreams": upstreams,
        "listen_host": m.proxy.listen.host,
        "listen_port": m.proxy.listen.port,
        "admin_host": m.proxy.admin.host,
        "admin_port": m.proxy.admin.port,
        "admin_token_file": str(m.proxy.token_file),
        "store_url": m.proxy.store_url,
        "served_by_header": True,
        "shadow": ShadowSettings(
            jsonl_path=str(m.proxy.shadow_jsonl) if m.proxy.shadow_jsonl else None,
            recheck_after_s=m.proxy.recheck_after_s,
        ),
        "routes": routes,
        "error_template": m.proxy.error_template,
        "client_key": dict(m.proxy.client_key) if m.proxy.client_key else None,
        "timeouts": Timeouts(connect_retry=m.proxy.connect_retry_s),
    }
    kwargs.update(overrides)
    return ProxyConfig(**kwargs)


def parity_rules(m: Manifest) -> Any:
    """One parity RuleSet: global defaults/endpoints, the rules files (`rules_file`, global
    and per service), each service's, and every manifest endpoint as a known pattern (so
    live pairs are counted under `GET /products/<int:id>`)."""
    from parity.rules import RuleSet

    files = [m.parity.rules_file, *(s.parity_rules_file for s in m.services.values())]
    loaded = [RuleSet.load(f).to_dict() for f in files if f is not None and f.exists()]
    defaults: dict[str, Any] = {}
    endpoints: list[Any] = []
    for rules in [m.parity.rules, *loaded, *(s.parity for s in m.services.values())]:
        for k, v in (rules.get("defaults", {}) or {}).items():
            if k in defaults and isinstance(v, list) and isinstance(defaults[k], list):
                defaults[k] = defaults[k] + v
            else:
                defaults[k] = v
        endpoints.extend(rules.get("endpoints", []) or [])
    named = {e.get("endpoint") for e in endpoints}
    for e in m.endpoints:
        if e.label not in named:
            endpoints.append({"endpoint": e.label})
    data: dict[str, Any] = {"endpoints": endpoints}
    if defaults:
        data["defaults"] = defaults
    return RuleSet.from_dict(data)


def parity_redactor(m: Manifest) -> Any:
    """The parity Redactor of the manifest: built-in fields and patterns plus `[parity]
    redact_fields`; `redact_patterns` replaces the built-in patterns when given."""
    from kitcore.redact import DEFAULT_PATTERNS
    from parity.recording import DEFAULT_REDACTED_FIELDS, Redactor

    patterns = m.parity.redact_patterns
    return Redactor(
        fields=[*DEFAULT_REDACTED_FIELDS, *m.parity.redact_fields],
        patterns=DEFAULT_PATTERNS if patterns is None else patterns,
    )


# ---------------------------------------------------------------------------------------------
# deep checks against the monolith, the services and the mappings


def _shape(pattern: str) -> str:
    """A pattern with variable names erased: `/products/<int:id>` ≡ `/products/<int:pid>`."""

    def conv(m: re.Match[str]) -> str:
        inner = m.group(0)[1:-1]
        return f"<{inner.split(':', 1)[0]}>" if ":" in inner else "<string>"

    return _VAR.sub(conv, pattern)


def _routes_of_app(spec: AppSpec) -> set[tuple[str, str]]:
    """The app's url_map, read in the app's own interpreter (kit/appside/introspect.py)."""
    from kit.appenv import run_app_script

    assert spec.app is not None
    answer = run_app_script(spec.runtime, "introspect.py", "url_map", spec.app)
    return {(m, _shape(rule["rule"])) for rule in answer["rules"] for m in rule["methods"]}


def _routes_of_openapi(url: str, timeout: float = 3.0) -> set[tuple[str, str]]:
    import httpx

    response = httpx.get(url, timeout=timeout, trust_env=False)
    response.raise_for_status()
    out = set()
    for path, item in (response.json().get("paths") or {}).items():
        flask_path = _OPENAPI_VAR.sub("<int>", path)
        for method in item:
            if method.upper() in HTTP_METHODS:
                out.add((method.upper(), flask_path))
    return out


def _served(routes: set[tuple[str, str]], e: Endpoint, openapi: bool) -> bool:
    shape = _shape(e.path)
    if openapi:  # OpenAPI loses converters: compare with every variable as <int>
        shape = re.sub(r"<[a-z]+>", "<int>", shape)
    return (e.method, shape) in routes


def _monolith_routes(m: Manifest) -> tuple[set[tuple[str, str]], bool, str]:
    """Routes of the monolith: its Flask url_map when importable, else its OpenAPI document."""
    errors = []
    if m.monolith.app:
        try:
            return _routes_of_app(m.monolith), False, f"url_map of {m.monolith.app}"
        except Exception as exc:  # noqa: BLE001 - fall back to OpenAPI, report both
            errors.append(f"cannot import {m.monolith.app}: {exc.__class__.__name__}: {exc}")
    url = m.monolith.openapi_url
    try:
        return _routes_of_openapi(url), True, url
    except Exception as exc:  # noqa: BLE001
        errors.append(f"cannot read {url}: {exc.__class__.__name__}: {exc}")
    raise LookupError("; ".join(errors))


def _table_columns(spec: AppSpec) -> tuple[dict[str, set[str]], str]:
    """Tables and columns from the app's `metadata` (read in its own interpreter), else by
    reflecting its database."""
    tables, _keys, source = _table_schema(spec)
    return tables, source


def _table_schema(
    spec: AppSpec,
) -> tuple[dict[str, set[str]], dict[str, tuple[str, ...]], str]:
    """Tables, columns and the primary keys the app's model declares (from `metadata`, read in
    its own interpreter; none when the schema is only reflected from its database)."""
    if spec.metadata:
        from kit.appenv import run_app_script

        answer = run_app_script(spec.runtime, "introspect.py", "metadata", spec.metadata)
        tables = {t["name"]: {c["name"] for c in t["columns"]} for t in answer["tables"]}
        keys = {t["name"]: tuple(t.get("primary_key") or ()) for t in answer["tables"]}
        return tables, keys, spec.metadata
    from sqlalchemy import inspect

    from kitcore.db import make_engine  # postgresql:// -> psycopg2 (the installed driver)

    engine = make_engine(spec.database_url)
    try:
        insp = inspect(engine)
        return (
            {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()},
            {},
            spec.database_url,
        )
    finally:
        engine.dispose()


def check_manifest(m: Manifest) -> list[Problem]:
    """Compare the manifest with the monolith, the services and the mappings; every problem."""
    from cdc.mapping import MappingError

    problems: list[Problem] = []
    try:
        routes, via_openapi, source = _monolith_routes(m)
    except LookupError as exc:
        problems.append(Problem("monolith", f"cannot list the monolith's endpoints: {exc}"))
        routes, via_openapi, source = None, False, ""
    if routes is not None:
        for s in m.services.values():
            for i, e in enumerate(s.endpoints):
                if not _served(routes, e, via_openapi):
                    problems.append(
                        Problem(
                            f"services.{s.name}.endpoints",
                            f"unknown endpoint {e.label} (#{i}): the monolith does not serve it "
                            f"(checked against {source})",
                        )
                    )
    try:
        mono_tables, model_keys, mono_source = _table_schema(m.monolith)
    except Exception as exc:  # noqa: BLE001
        problems.append(Problem("monolith", f"cannot read the monolith schema: {exc}"))
        mono_tables, model_keys, mono_source = None, {}, ""
    for s in m.services.values():
        where = f"services.{s.name}"
        if mono_tables is not None:
            for key, names in (("tables", s.tables), ("replicas", s.replicas)):
                for t in names:
                    if t not in mono_tables:
                        problems.append(
                            Problem(
                                f"{where}.{key}",
                                f"table {t!r} is not in the monolith schema ({mono_source})",
                            )
                        )
        if s.app:
            try:
                svc_routes = _routes_of_app(s)
            except Exception as exc:  # noqa: BLE001
                problems.append(Problem(f"{where}.app", f"cannot import {s.app}: {exc}"))
            else:
                for e in s.endpoints:
                    if not _served(svc_routes, e, False):
                        problems.append(
                            Problem(
                                f"{where}.endpoints",
                                f"{e.label} is not served by the service app {s.app}",
                            )
                        )
        try:
            mapping = s.mapping()
        except MappingError as exc:
            problems.append(Problem(f"{where}.mapping", str(exc)))
            continue
        if mapping.service != s.name:
            problems.append(
                Problem(f"{where}.mapping", f"mapping is for service {mapping.service!r}")
            )
        mapped = set(mapping.source_tables)
        for t in s.tables:
            if t not in mapped:
                problems.append(Problem(f"{where}.mapping", f"table {t!r} has no [[tables]] entry"))
        for t in s.replicas:
            if t not in mapped:
                problems.append(
                    Problem(
                        f"{where}.replicas",
                        f"replica {t!r} has no [[tables]] entry in the mapping "
                        f"({s.mapping_path}): map it like an owned table",
                    )
                )
        for t in sorted(mapped - set(s.tables) - set(s.replicas)):
            problems.append(
                Problem(
                    f"{where}.tables",
                    f"mapping maps table {t!r}, which is not listed here (a table the service "
                    "only reads: add it to replicas = [...])",
                )
            )
        try:
            svc_tables, svc_source = _table_columns(s)
        except Exception as exc:  # noqa: BLE001
            problems.append(Problem(where, f"cannot read the service schema: {exc}"))
            svc_tables, svc_source = None, ""
        problems.extend(
            _mapping_problems(
                where, mapping, mono_tables, mono_source, svc_tables, svc_source, s.replicas
            )
        )
        problems.extend(_key_problems(m, s, mapping, model_keys))
    return problems


def _key_problems(
    m: Manifest, s: ServiceSpec, mapping: Any, model_keys: Mapping[str, tuple[str, ...]]
) -> list[Problem]:
    """The keys of the service's mapped monolith tables against the real monolith database
    (cdc.keys.check_keys): a primary key the model declares but the database lacks, a key the
    mapping maps from other columns, a declared key that is not unique. Skipped while the
    database does not exist yet (a SQLite file not created, a server not reachable)."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from cdc.keys import check_keys
    from kitcore.db import make_engine

    url = make_url(m.monolith.database_url)
    if url.get_backend_name() == "sqlite" and (
        not url.database or url.database == ":memory:" or not Path(url.database).exists()
    ):
        return []
    engine = make_engine(m.monolith.database_url)
    try:
        try:
            existing = set(inspect(engine).get_table_names())
        except Exception:  # noqa: BLE001 - no database to compare with yet
            return []
        if not existing:
            return []
        found = check_keys(engine, mapping, {t: k for t, k in model_keys.items() if k})
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return [Problem(f"services.{s.name}.mapping", f"cannot check keys: {exc}")]
    finally:
        engine.dispose()
    return [Problem(f"services.{s.name}.mapping", f"keys: {p}") for p in found]


def _mapping_problems(
    where: str,
    mapping: Any,
    mono: dict[str, set[str]] | None,
    mono_source: str,
    svc: dict[str, set[str]] | None,
    svc_source: str,
    replicas: Sequence[str] = (),
) -> list[Problem]:
    problems: list[Problem] = []
    here = f"{where}.mapping"

    def add(text: str) -> None:
        problems.append(Problem(here, text))

    def lacks(columns: set[str] | None, name: str) -> bool:
        """True only when the schema is known (not None) and has no such column."""
        return columns is not None and name not in columns

    for tm in mapping.tables:
        src_cols = mono.get(tm.source) if mono is not None else None
        tgt_cols = svc.get(tm.target) if svc is not None else None
        forward, reverse = f"{tm.source} -> {tm.target}", f"{tm.source} [reverse]"
        if svc is not None and tgt_cols is None:
            add(
                f"{forward}: target table {tm.target!r} is not in the service schema ({svc_source})"
            )
        for c in tm.columns:
            if lacks(tgt_cols, c.target):
                add(f"{forward}: mapping to a missing column {tm.target}.{c.target} ({svc_source})")
            for src in c.sources:
                if lacks(src_cols, src):
                    add(
                        f"{forward}: column {c.target!r} reads missing "
                        f"monolith column {tm.source}.{src} ({mono_source})"
                    )
        if tm.source in replicas:
            continue  # a replica is never written back: no reverse mapping to check
        for c in tm.reverse:
            if lacks(src_cols, c.target):
                add(f"{reverse}: writes missing monolith column {tm.source}.{c.target}")
            for src in c.sources:
                if lacks(tgt_cols, src):
                    add(
                        f"{reverse}: column {c.target!r} reads missing service "
                        f"column {tm.target}.{src}"
                    )
        if src_cols is not None:
            carried = {c.target for c in tm.reverse} | {
                c.sources[0] for c in tm.columns if c.is_copy
            }
            missing = sorted(src_cols - carried - set(tm.drop))
            if missing:
                add(
                    f"{reverse}: monolith column(s) {', '.join(missing)} get no "
                    "value after write cut-over: add them to [tables.reverse]"
                )
    return problems


def describe(m: Manifest) -> list[tuple[str, str, str, str]]:
    """(service, endpoint, kind, tables) rows for `kit manifest show`."""
    return [
        (s.name, e.label, e.kind, ",".join(s.tables))
        for s in m.services.values()
        for e in s.endpoints
    ]
