"""Route model: modes, Flask-style path patterns and the compiled route table.

Everything here is pure (no I/O) so that the hot path is a dictionary lookup plus, at most,
a short scan over pre-compiled regular expressions, and so that the parser can be reused by
the CLI, the admin API and the store to reject bad input before anything changes.

Specificity (the most specific matching route wins), compared segment by segment from the
left, each segment ranked::

    static text  >  <int:x>  >  <string:x> / <x>  >  <path:x>

The first segment that differs decides; when one rank tuple is a prefix of the other, the
pattern with more segments wins. Ties (same ranks) are broken by pattern text, so the
ordering is total and does not depend on declaration order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

MONOLITH = "monolith"

MODE_MONOLITH = "monolith"
MODE_SHADOW = "shadow"
MODE_CANARY = "canary"
MODE_EXTRACTED = "extracted"
#: Write cut-over only (kit.playbook.steps.writes): the proxy holds the route's requests
#: until the next route version releases them, so no write reaches either side while CDC
#: brings the new owner up to date (ids handed out on both sides would collide otherwise).
MODE_HELD = "held"

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

RANK_STATIC = 3
RANK_INT = 2
RANK_STRING = 1
RANK_PATH = 0

_CONVERTERS: dict[str, tuple[str, int]] = {
    "int": (r"\d+", RANK_INT),
    "string": (r"[^/]+", RANK_STRING),
    "path": (r"[^/].*", RANK_PATH),
}
_VARIABLE = re.compile(
    r"^<(?:(?P<conv>[a-zA-Z_][a-zA-Z0-9_]*):)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>$"
)
_STATIC_SEGMENT = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@%]*$")
_METHOD_TOKEN = re.compile(r"^[A-Z]+$")


class RouteError(ValueError):
    """A route, pattern or mode is invalid; the message says exactly what is wrong."""


@dataclass(frozen=True, slots=True)
class Mode:
    """A parsed routing mode; `percent` is only meaningful for canary."""

    kind: str
    percent: Decimal = Decimal(0)
    #: Canary buckets (0..9999) strictly below this go to the service (computed once: the
    #: canary decision and its statistics read it on every request).
    threshold: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", int(self.percent * 100))

    def __str__(self) -> str:
        if self.kind == MODE_CANARY:
            return f"canary:{self.percent.normalize():f}"
        return self.kind


def parse_mode(text: str) -> Mode:
    """Parse `monolith`, `shadow`, `extracted` or `canary:<percent>`; raise RouteError."""
    if not isinstance(text, str) or not text.strip():
        raise RouteError("mode must be one of monolith, shadow, canary:<percent>, extracted")
    raw = text.strip().lower()
    if raw in (MODE_MONOLITH, MODE_SHADOW, MODE_EXTRACTED, MODE_HELD):
        return Mode(raw)
    if raw.startswith("canary:") or raw == MODE_CANARY:
        value = raw.partition(":")[2]
        if not re.fullmatch(r"\d{1,3}(\.\d)?", value):
            raise RouteError(
                f"canary percent must be a number with at most one decimal, got {value!r}"
            )
        try:
            percent = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - regex guards this
            raise RouteError(f"canary percent is not a number: {value!r}") from exc
        if not (Decimal(0) <= percent <= Decimal(100)):
            raise RouteError(f"canary percent must be between 0 and 100, got {value}")
        return Mode(MODE_CANARY, percent)
    raise RouteError(
        f"unknown mode {text!r}: expected monolith, shadow, canary:<percent> or extracted"
    )


def parse_methods(methods: str | Iterable[str]) -> frozenset[str]:
    """Normalise `GET`, `get,head` or a list into a validated set of upper-case methods."""
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    result = set()
    for item in items:
        method = str(item).strip().upper()
        if not method:
            continue
        if not _METHOD_TOKEN.match(method) or method not in HTTP_METHODS:
            raise RouteError(
                f"unknown HTTP method {item!r}: expected one of {', '.join(sorted(HTTP_METHODS))}"
            )
        result.add(method)
    if not result:
        raise RouteError("at least one HTTP method is required")
    return frozenset(result)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled Flask-style path pattern with its specificity rank."""

    text: str
    regex: re.Pattern[str]
    ranks: tuple[int, ...]
    is_static: bool

    def match(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def parse_pattern(text: str) -> Pattern:
    """Compile `/products/<int:id>`-style patterns; converters must span a whole segment."""
    if not isinstance(text, str) or not text.startswith("/"):
        raise RouteError(f"path pattern must start with '/', got {text!r}")
    if "?" in text or "#" in text:
        raise RouteError(f"path pattern must not contain a query or fragment: {text!r}")
    segments = text[1:].split("/")
    parts: list[str] = []
    ranks: list[int] = []
    names: set[str] = set()
    for index, segment in enumerate(segments):
        if "<" in segment or ">" in segment:
            var = _VARIABLE.match(segment)
            if var is None:
                raise RouteError(
                    f"bad segment {segment!r} in {text!r}: a converter must span a whole "
                    "segment, like <int:id>, <string:name>, <path:rest> or <name>"
                )
            conv = var.group("conv") or "string"
            name = var.group("name")
            if conv not in _CONVERTERS:
                raise RouteError(
                    f"unknown converter {conv!r} in {text!r}: expected int, string or path"
                )
            if name in names:
                raise RouteError(f"variable {name!r} appears twice in {text!r}")
            names.add(name)
            if conv == "path" and index != len(segments) - 1:
                raise RouteError(f"<path:{name}> must be the last segment in {text!r}")
            regex, rank = _CONVERTERS[conv]
            parts.append(regex)
            ranks.append(rank)
        else:
            if segment == "" and index != len(segments) - 1:
                raise RouteError(f"empty segment ('//') in path pattern {text!r}")
            if not _STATIC_SEGMENT.match(segment):
                raise RouteError(f"invalid character in path pattern segment {segment!r}")
            parts.append(re.escape(segment))
            ranks.append(RANK_STATIC)
    regex = re.compile("/" + "/".join(parts))
    return Pattern(text, regex, tuple(ranks), all(r == RANK_STATIC for r in ranks))


def specificity_key(pattern: Pattern) -> tuple[tuple[int, ...], str]:
    """Sort key: larger is more specific (see the module docstring)."""
    return (pattern.ranks, pattern.text)


@dataclass(frozen=True, slots=True)
class Route:
    """One routed endpoint: a method and a pattern sent to a service in a mode."""

    method: str
    path: str
    service: str
    mode: Mode = Mode(MODE_MONOLITH)
    fallback: bool = True
    shadow_writes: bool = False
    sticky_header: str | None = None
    sticky_cookie: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    def options(self) -> dict[str, object]:
        return {
            "fallback": self.fallback,
            "shadow_writes": self.shadow_writes,
            "sticky_header": self.sticky_header,
            "sticky_cookie": self.sticky_cookie,
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "path": self.path,
            "service": self.service,
            "mode": str(self.mode),
            **self.options(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Route:
        """Build and validate a route from plain data (store rows, JSON, TOML)."""
        methods = parse_methods(str(data.get("method") or ""))
        if len(methods) != 1:
            raise RouteError("a route has exactly one method")
        return build_route(
            next(iter(methods)),
            str(data.get("path") or ""),
            str(data.get("service") or MONOLITH),
            str(data.get("mode") or MODE_MONOLITH),
            fallback=bool(data.get("fallback", True)),
            shadow_writes=bool(data.get("shadow_writes", False)),
            sticky_header=_opt_str(data.get("sticky_header")),
            sticky_cookie=_opt_str(data.get("sticky_cookie")),
        )


def _opt_str(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def build_route(
    method: str,
    path: str,
    service: str,
    mode: str | Mode,
    *,
    fallback: bool = True,
    shadow_writes: bool = False,
    sticky_header: str | None = None,
    sticky_cookie: str | None = None,
) -> Route:
    """Validate every part of a route up front and return it."""
    methods = parse_methods(method)
    if len(methods) != 1:
        raise RouteError("a route has exactly one method")
    (method_norm,) = methods
    parse_pattern(path)
    parsed_mode = mode if isinstance(mode, Mode) else parse_mode(mode)
    if not service or not re.fullmatch(r"[A-Za-z0-9_.\-]+", service):
        raise RouteError(f"invalid service name {service!r}")
    if parsed_mode.kind != MODE_MONOLITH and service == MONOLITH:
        raise RouteError(f"mode {parsed_mode} needs a service other than the monolith")
    if sticky_header and sticky_cookie:
        raise RouteError("choose either a sticky header or a sticky cookie, not both")
    return Route(
        method_norm,
        path,
        service,
        parsed_mode,
        fallback,
        shadow_writes,
        sticky_header,
        sticky_cookie,
    )


@dataclass(frozen=True, slots=True)
class Match:
    """The result of matching a request: the route (None = default) and its pattern text."""

    route: Route | None
    pattern: str

    @property
    def service(self) -> str:
        return self.route.service if self.route else MONOLITH

    @property
    def mode(self) -> Mode:
        return self.route.mode if self.route else Mode(MODE_MONOLITH)


DEFAULT_MATCH = Match(None, "<default>")


@dataclass(slots=True)
class _Entry:
    pattern: Pattern
    by_method: dict[str, Match] = field(default_factory=dict)


class RouteTable:
    """An immutable compiled route table; swap whole tables, never mutate one in place."""

    __slots__ = ("version", "routes", "_static", "_dynamic")

    def __init__(self, routes: Iterable[Route], version: int = 0) -> None:
        self.version = version
        self.routes: tuple[Route, ...] = tuple(sorted(routes, key=lambda r: (r.path, r.method)))
        entries: dict[str, _Entry] = {}
        for route in self.routes:
            entry = entries.get(route.path)
            if entry is None:
                entry = entries[route.path] = _Entry(parse_pattern(route.path))
            if route.method in entry.by_method:
                raise RouteError(f"duplicate route {route.method} {route.path}")
            entry.by_method[route.method] = Match(route, route.path)
        ordered = sorted(entries.values(), key=lambda e: specificity_key(e.pattern), reverse=True)
        # Static patterns outrank any dynamic one that matches the same path, so an exact
        # dictionary hit can be returned without looking at the dynamic list.
        self._static: dict[str, dict[str, Match]] = {
            e.pattern.text: e.by_method for e in ordered if e.pattern.is_static
        }
        self._dynamic: tuple[tuple[re.Pattern[str], dict[str, Match]], ...] = tuple(
            (e.pattern.regex, e.by_method) for e in ordered if not e.pattern.is_static
        )

    def match(self, method: str, path: str) -> Match:
        """Most specific route declared for this method and path, else the default."""
        static = self._static.get(path)
        if static is not None:
            hit = static.get(method)
            if hit is not None:
                return hit
        for regex, by_method in self._dynamic:
            hit = by_method.get(method)
            if hit is not None and regex.fullmatch(path) is not None:
                return hit
        return DEFAULT_MATCH

    def get(self, method: str, path: str) -> Route | None:
        """The declared route with exactly this method and pattern text."""
        static = self._static.get(path)
        if static is not None and method in static:
            return static[method].route
        for route in self.routes:
            if route.method == method and route.path == path:
                return route
        return None
