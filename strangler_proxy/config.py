"""Typed, validated proxy configuration, loadable from TOML and environment variables.

TOML layout (a top-level `[proxy]` table is also accepted, so the proxy section can live in a
larger manifest)::

    listen_host = "127.0.0.1"
    listen_port = 8080
    admin_host = "127.0.0.1"
    admin_port = 8081
    admin_token = "..."            # or admin_token_file; else one is generated
    store_url = "sqlite:///var/proxy-routes.db"
    served_by_header = true
    workers = 2                    # proxy processes sharing the port (0 = one per CPU)
    fast_path = true               # lean HTTP/1.1 hot path (see strangler_proxy/fastpath.py)
    event_loop = "auto"            # auto (uvloop when installed), asyncio or uvloop

    [upstreams]
    monolith = "http://127.0.0.1:5000"
    catalog = "http://127.0.0.1:5001"

    [timeouts]   # connect, total (seconds)
    [limits]     # max_body_bytes, max_header_bytes, max_line_bytes
    [shadow]     # max_concurrency, queue_size, ring_size, jsonl_path, record_body_bytes,
                 # recheck_after_s, recheck_max_in_flight, recheck_per_second
    [breaker]    # failure_threshold, open_seconds, half_open_probes

    [[routes]]
    methods = ["GET", "HEAD"]
    path = "/products/<int:id>"
    service = "catalog"
    mode = "monolith"          # optional
    fallback = true            # optional
    shadow_writes = false      # optional
    sticky_header = "X-Client-Id"   # or sticky_cookie

Environment variables (override the file): `KIT_PROXY_<FIELD>` for top-level scalars
(e.g. `KIT_PROXY_LISTEN_PORT`, `KIT_PROXY_STORE_URL`, `KIT_PROXY_ADMIN_TOKEN`),
`KIT_PROXY_<SECTION>_<FIELD>` for sections (`KIT_PROXY_TIMEOUTS_TOTAL`), and
`KIT_PROXY_UPSTREAM_<NAME>=<url>` for upstreams.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from strangler_proxy.errors import parse_template
from strangler_proxy.policy import ClientKeySpec
from strangler_proxy.routes import MONOLITH, Route, RouteError, build_route, parse_methods

ENV_PREFIX = "KIT_PROXY_"


def _positive(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class Timeouts:
    """Upstream timeouts in seconds; `total` bounds the whole exchange (never a hang)."""

    connect: float = 2.0
    total: float = 30.0
    #: A client must send a whole request head within this many seconds of its first byte
    #: (or of connecting): slow senders are answered 408 and closed, on every path.
    header: float = 20.0
    #: While an upstream refuses connections (restarting), keep trying to connect for up to
    #: this many seconds before answering 502; nothing was sent, so any method waits (0: off).
    connect_retry: float = 0.0

    def __post_init__(self) -> None:
        _positive("timeouts.connect", self.connect)
        _positive("timeouts.total", self.total)
        _positive("timeouts.header", self.header)
        retry = self.connect_retry
        if not isinstance(retry, int | float) or isinstance(retry, bool) or not 0 <= retry:
            raise ValueError(f"timeouts.connect_retry must be seconds >= 0, got {retry!r}")
        if retry >= self.total:
            raise ValueError("timeouts.connect_retry must be shorter than timeouts.total")


@dataclass(frozen=True)
class Limits:
    """Request size limits (bodies over max_body_bytes get 413, headers over the limits 431) and
    connection caps (a connection over a cap is answered 503 and closed)."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_line_bytes: int = 8 * 1024
    max_headers: int = 100
    max_connections: int = 2048
    max_connections_per_client: int = 512

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"limits.{f.name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ShadowSettings:
    """Shadow copies run in the background with bounded concurrency and a bounded queue."""

    max_concurrency: int = 8
    queue_size: int = 256
    ring_size: int = 200
    jsonl_path: str | None = "var/proxy-shadow.jsonl"
    record_body_bytes: int = 64 * 1024
    # A safe (GET/HEAD) pair that differs is sent again to BOTH sides after this delay (about
    # the CDC lag); agreeing then, it was lag (`lagged`), not a regression. 0 = no re-check.
    # Only with a judge wired (`bootstrap(shadow_judge=...)`, the kit's parity comparator).
    recheck_after_s: float = 1.0
    recheck_max_in_flight: int = 8  # re-checks waiting or running; more are dropped, counted
    recheck_per_second: float = 10.0  # re-checks started per second; more are dropped, counted

    def __post_init__(self) -> None:
        for name in (
            "max_concurrency",
            "queue_size",
            "ring_size",
            "record_body_bytes",
            "recheck_max_in_flight",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"shadow.{name} must be a positive integer, got {value!r}")
        for name in ("recheck_after_s", "recheck_per_second"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"shadow.{name} must be a number >= 0, got {value!r}")


@dataclass(frozen=True)
class BreakerSettings:
    """Per-service circuit breaker: opens after N consecutive failures, probes after a pause."""

    failure_threshold: int = 5
    open_seconds: float = 5.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.failure_threshold, int) or self.failure_threshold < 1:
            raise ValueError("breaker.failure_threshold must be an integer >= 1")
        _positive("breaker.open_seconds", self.open_seconds)
        if not isinstance(self.half_open_probes, int) or self.half_open_probes < 1:
            raise ValueError("breaker.half_open_probes must be an integer >= 1")


def _check_port(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError(f"{name} must be a port number 0..65535, got {value!r}")


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"upstreams.{name} must be an http(s) URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"upstreams.{name} must not have a query or fragment: {url!r}")


@dataclass(frozen=True)
class ProxyConfig:
    """Everything the proxy needs; validated on construction so bad config fails at start."""

    upstreams: Mapping[str, str]
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    admin_token: str | None = None
    admin_token_file: str = "var/proxy-admin-token"
    metrics_require_token: bool = False
    store_url: str = "sqlite:///var/proxy-routes.db"
    poll_interval: float = 0.25
    served_by_header: bool = False
    preserve_host: bool = False
    shutdown_timeout: float = 10.0
    workers: int = 1
    fast_path: bool = True
    event_loop: str = "auto"
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    shadow: ShadowSettings = field(default_factory=ShadowSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    routes: tuple[Route, ...] = ()
    #: Where a client's identity comes from (canary stickiness, read-your-writes):
    #: {header = "X-Client-Id"} | {cookie = "sid"} | {hash_header = "Authorization"};
    #: None: the client address.
    client_key: ClientKeySpec | None = None
    #: Per service: after a client's write to any route of the service, its reads of the
    #: service's routes go to the side that took the write for this many seconds (0: off).
    ryw_window_s: Mapping[str, float] = field(default_factory=dict)
    ryw_max_clients: int = 100_000
    #: The proxy's own error bodies as JSON text with placeholders (see strangler_proxy/errors.py);
    #: None: {"error": {"code", "message"}}.
    error_template: str | None = None
    #: Host header values the admin server answers (besides its own address); anything else
    #: gets 421, so a DNS-rebinding page cannot reach it.
    admin_allowed_hosts: tuple[str, ...] = ()
    #: A request to a route `held` for a write cut-over waits at most this long for the route
    #: version that releases it, then gets 503 (nothing forwarded); a cut-over takes ~1-2 s.
    hold_limit_s: float = 15.0

    def __post_init__(self) -> None:
        if not isinstance(self.upstreams, Mapping) or MONOLITH not in self.upstreams:
            raise ValueError("upstreams must name a 'monolith' upstream")
        for name, url in self.upstreams.items():
            _check_url(name, url)
        object.__setattr__(self, "upstreams", {k: v.rstrip("/") for k, v in self.upstreams.items()})
        _check_port("listen_port", self.listen_port)
        _check_port("admin_port", self.admin_port)
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ValueError("admin_token must be at least 16 characters")
        if self.admin_token is not None and not self.admin_token.isascii():
            raise ValueError("admin_token must be ASCII")
        if not self.store_url or "://" not in self.store_url:
            raise ValueError(f"store_url must be an SQLAlchemy URL, got {self.store_url!r}")
        if not 0 < self.poll_interval <= 0.5:
            raise ValueError("poll_interval must be in (0, 0.5] seconds")
        _positive("shutdown_timeout", self.shutdown_timeout)
        _positive("hold_limit_s", self.hold_limit_s)
        if (
            not isinstance(self.workers, int)
            or isinstance(self.workers, bool)
            or not (0 <= self.workers <= 64)
        ):
            raise ValueError("workers must be an integer 0..64 (0 = one per CPU)")
        if self.event_loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError("event_loop must be one of auto, asyncio, uvloop")
        if isinstance(self.client_key, Mapping):
            object.__setattr__(self, "client_key", ClientKeySpec.from_mapping(self.client_key))
        elif self.client_key is not None and not isinstance(self.client_key, ClientKeySpec):
            raise ValueError('client_key must be a table such as {header = "X-Client-Id"}')
        self._check_ryw()
        if self.error_template is not None:
            parse_template(self.error_template)
        hosts = self.admin_allowed_hosts
        if isinstance(hosts, str) or not all(isinstance(h, str) and h for h in hosts):
            raise ValueError("admin_allowed_hosts must be a list of host[:port] strings")
        object.__setattr__(self, "admin_allowed_hosts", tuple(hosts))
        seen: set[tuple[str, str]] = set()
        for route in self.routes:
            if route.service not in self.upstreams:
                raise ValueError(
                    f"routes: {route.method} {route.path} names unknown service {route.service!r}"
                )
            if route.key in seen:
                raise ValueError(f"routes: duplicate route {route.method} {route.path}")
            seen.add(route.key)

    def _check_ryw(self) -> None:
        windows = self.ryw_window_s
        if not isinstance(windows, Mapping):
            raise ValueError("ryw_window_s must be a table {<service> = <seconds>}")
        for name, seconds in windows.items():
            if name not in self.upstreams or name == MONOLITH:
                raise ValueError(f"ryw_window_s.{name}: not a service of this proxy")
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                raise ValueError(f"ryw_window_s.{name} must be seconds >= 0, got {seconds!r}")
        object.__setattr__(self, "ryw_window_s", {k: float(v) for k, v in windows.items()})
        if not isinstance(self.ryw_max_clients, int) or self.ryw_max_clients < 1:
            raise ValueError("ryw_max_clients must be a positive integer")


_SECTIONS = {
    "timeouts": Timeouts,
    "limits": Limits,
    "shadow": ShadowSettings,
    "breaker": BreakerSettings,
}


def _routes_from(items: list[Mapping[str, Any]]) -> tuple[Route, ...]:
    routes: list[Route] = []
    for index, item in enumerate(items):
        try:
            methods = parse_methods(item.get("methods") or item.get("method") or "GET")
            for method in sorted(methods):
                routes.append(
                    build_route(
                        method,
                        str(item.get("path", "")),
                        str(item.get("service", MONOLITH)),
                        str(item.get("mode", "monolith")),
                        fallback=bool(item.get("fallback", True)),
                        shadow_writes=bool(item.get("shadow_writes", False)),
                        sticky_header=item.get("sticky_header"),
                        sticky_cookie=item.get("sticky_cookie"),
                    )
                )
        except RouteError as exc:
            raise ValueError(f"routes[{index}]: {exc}") from exc
    return tuple(routes)


def config_from_mapping(data: Mapping[str, Any]) -> ProxyConfig:
    """Build a ProxyConfig from plain data (parsed TOML, JSON); unknown keys are errors."""
    if "proxy" in data and isinstance(data["proxy"], Mapping):
        data = data["proxy"]
    known = {f.name for f in fields(ProxyConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"unknown configuration key {key!r}")
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ValueError(f"{key} must be a table")
            section = _SECTIONS[key]
            allowed = {f.name for f in fields(section)}
            for sub in value:
                if sub not in allowed:
                    raise ValueError(f"unknown configuration key {key}.{sub}")
            kwargs[key] = section(**value)
        elif key == "routes":
            kwargs[key] = _routes_from(list(value))
        elif key in ("upstreams", "ryw_window_s"):
            if not isinstance(value, Mapping):
                raise ValueError(f"{key} must be a table")
            kwargs[key] = dict(value)
        elif key == "admin_allowed_hosts":
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        else:
            kwargs[key] = value
    if "upstreams" not in kwargs:
        raise ValueError("upstreams must name a 'monolith' upstream")
    return ProxyConfig(**kwargs)


def _coerce(text: str, type_name: str, name: str) -> Any:
    """Convert an environment string to the declared field type (annotation text)."""
    if type_name == "bool":
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be a boolean, got {text!r}")
    try:
        if type_name == "int":
            return int(text)
        if type_name == "float":
            return float(text)
        if type_name.startswith("tuple"):
            return tuple(part.strip() for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {text!r}") from exc
    return text


def _field_types(cls: Any) -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(cls)}


def apply_env(config: ProxyConfig, env: Mapping[str, str] | None = None) -> ProxyConfig:
    """Overlay `KIT_PROXY_*` environment variables on a config."""
    env = os.environ if env is None else env
    changes: dict[str, Any] = {}
    upstreams = dict(config.upstreams)
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name.startswith("upstream_"):
            upstreams[name[len("upstream_") :]] = raw
            continue
        section = next((s for s in _SECTIONS if name.startswith(s + "_")), None)
        if section is not None:
            sub = name[len(section) + 1 :]
            current = changes.get(section, getattr(config, section))
            types = _field_types(current)
            if sub not in types:
                raise ValueError(f"unknown environment setting {key}")
            changes[section] = replace(current, **{sub: _coerce(raw, types[sub], key)})
            continue
        types = _field_types(config)
        if name in ("routes", "upstreams", "client_key", "ryw_window_s") or name not in types:
            raise ValueError(f"unknown environment setting {key}")
        changes[name] = _coerce(raw, types[name], key)
    changes["upstreams"] = upstreams
    return replace(config, **changes)


def load_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> ProxyConfig:
    """Load TOML (if given) then overlay the environment; raise ValueError on anything bad."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ValueError(f"configuration file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML: {exc}") from exc
    env_map = os.environ if env is None else env
    if "upstreams" not in data.get("proxy", data):
        # Allow env-only configuration: the monolith URL may come from the environment.
        env_upstreams = {
            k[len(ENV_PREFIX) + len("upstream_") :].lower(): v
            for k, v in env_map.items()
            if k.upper().startswith(ENV_PREFIX + "UPSTREAM_")
        }
        target = data.setdefault("proxy", {}) if "proxy" in data else data
        target["upstreams"] = env_upstreams
    return apply_env(config_from_mapping(data), env_map)
