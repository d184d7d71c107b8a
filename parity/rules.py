"""Per-endpoint comparison rules, loadable from dicts / TOML / JSON with clear errors.

An endpoint is a method plus a Flask-style path pattern (`GET /products/<int:id>`); `*`
stands for any method. Rules of the `defaults` section apply to every endpoint; an endpoint's
own rules are added to them. Learned noise is stored as `noise` paths: differences there are
reported as noise, never as regressions (unlike `ignore`, which drops them silently).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from parity.paths import PathMatcher, PathSyntaxError, parse_concrete, parse_pattern


class RulesError(ValueError):
    """Invalid rules; the message names the offending field (e.g. `endpoints[1].tolerance`)."""


ALWAYS_COMPARED_HEADERS = ("content-type",)
# Headers that differ between any two servers; skipped when `headers_allow` contains "*".
VOLATILE_HEADERS = frozenset(
    {
        "date",
        "server",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "x-request-id",
        "set-cookie",
        "etag",
        "age",
        "via",
    }
)

_CONVERTERS = {
    "int": r"\d+",
    "float": r"\d+(?:\.\d+)?",
    "string": r"[^/]+",
    "default": r"[^/]+",
    "path": r".+",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "any": r"[^/]+",
}
_PLACEHOLDER = re.compile(r"<(?:(?P<conv>[a-zA-Z_]+):)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"}


@dataclass(frozen=True)
class EndpointPattern:
    """`GET /products/<int:id>` compiled to a regex; also accepts OpenAPI `{id}`."""

    method: str
    pattern: str

    def __post_init__(self) -> None:
        method = self.method.upper()
        if method not in _METHODS:
            raise RulesError(
                f"endpoint {self.method} {self.pattern}: unknown method {self.method!r}"
            )
        object.__setattr__(self, "method", method)
        if not self.pattern.startswith("/"):
            raise RulesError(f"endpoint {self.label}: path must start with '/'")
        object.__setattr__(self, "_regex", self._compile(self.pattern))

    @staticmethod
    def _compile(pattern: str) -> re.Pattern[str]:
        pattern = re.sub(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}", r"<\1>", pattern)
        out, pos = [], 0
        for m in _PLACEHOLDER.finditer(pattern):
            out.append(re.escape(pattern[pos : m.start()]))
            conv = m.group("conv") or "default"
            if conv not in _CONVERTERS:
                raise RulesError(f"endpoint path {pattern!r}: unknown converter {conv!r}")
            out.append(f"(?:{_CONVERTERS[conv]})")
            pos = m.end()
        out.append(re.escape(pattern[pos:]))
        if "<" in pattern[pos:] or ">" in pattern[pos:]:
            raise RulesError(f"endpoint path {pattern!r}: malformed '<...>' placeholder")
        return re.compile("^" + "".join(out) + "/?$")

    @classmethod
    def parse(cls, text: str) -> EndpointPattern:
        """`"GET /x"`, `"* /x"` or `"/x"` (any method)."""
        parts = str(text).strip().split(None, 1)
        if not parts:
            raise RulesError("endpoint: empty")
        if len(parts) == 1:
            return cls("*", parts[0])
        return cls(parts[0], parts[1].strip())

    @property
    def label(self) -> str:
        return f"{self.method} {self.pattern}"

    def matches(self, method: str, path: str) -> bool:
        if self.method != "*" and self.method != method.upper():
            return False
        return bool(self._regex.match(path))  # type: ignore[attr-defined]


_NUMERIC_SEGMENT = re.compile(r"^\d+$")


def default_endpoint_label(method: str, path: str) -> str:
    """Generalise numeric segments so `/orders/5/pay` groups as `/orders/<int:id>/pay`."""
    segs = ["<int:id>" if _NUMERIC_SEGMENT.match(s) else s for s in path.split("/")]
    return f"{method.upper()} {'/'.join(segs) or '/'}"


class EndpointResolver:
    """Names the endpoint of a request from known patterns (rules, OpenAPI, manifest)."""

    def __init__(self, patterns: Iterable[str | EndpointPattern] = ()) -> None:
        self._patterns: list[EndpointPattern] = []
        self._cache: dict[tuple[str, str], str] = {}
        for p in patterns:
            self.add(p)

    def add(self, pattern: str | EndpointPattern) -> None:
        ep = pattern if isinstance(pattern, EndpointPattern) else EndpointPattern.parse(pattern)
        if all(ep.label != known.label for known in self._patterns):
            # literal patterns first, so `/products/export` beats `/products/<id>`
            self._patterns.append(ep)
            self._patterns.sort(
                key=lambda e: (e.pattern.count("<") + e.pattern.count("{"), e.method == "*")
            )
            self._cache.clear()

    def resolve(self, method: str, path: str) -> str:
        key = (method.upper(), path)
        label = self._cache.get(key)
        if label is None:
            label = next(
                (
                    p.label if p.method != "*" else f"{key[0]} {p.pattern}"
                    for p in self._patterns
                    if p.matches(*key)
                ),
                None,
            ) or default_endpoint_label(*key)
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key] = label
        return label


# ---------------------------------------------------------------- normalisers

TIMESTAMP_MARK = "<timestamp>"
_TS_START = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_ROUND_UNITS = {"ms": 1_000, "s": 1_000_000, "min": 60_000_000, "h": 3_600_000_000}


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _TS_START.match(value):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _make_normaliser(spec: Mapping[str, Any], where: str) -> Callable[[Any], Any]:
    kind = spec.get("kind")
    if kind == "timestamp":
        mode = spec.get("mode", "ignore")
        if mode == "ignore":
            # keep the type: a timestamp still differs from null, a number or a non-date
            return lambda v: TIMESTAMP_MARK if _parse_ts(v) is not None else v
        if mode == "round":
            unit = spec.get("unit", "s")
            if unit not in _ROUND_UNITS:
                raise RulesError(
                    f"{where}.unit: must be one of {sorted(_ROUND_UNITS)}, got {unit!r}"
                )
            step = _ROUND_UNITS[unit]

            def round_ts(v: Any) -> Any:
                dt = _parse_ts(v)
                if dt is None:
                    return v
                micros = int(dt.timestamp() * 1_000_000)
                return f"<ts:{round(micros / step)}{unit}>"

            return round_ts
        raise RulesError(f"{where}.mode: must be 'ignore' or 'round', got {mode!r}")
    if kind == "case":
        return lambda v: v.casefold() if isinstance(v, str) else v
    if kind == "whitespace":
        return lambda v: " ".join(v.split()) if isinstance(v, str) else v
    if kind == "number":
        digits = spec.get("digits", 2)
        if not isinstance(digits, int) or isinstance(digits, bool) or digits < 0:
            raise RulesError(f"{where}.digits: must be a non-negative integer")
        return lambda v: round(v, digits) if isinstance(v, float) else v
    raise RulesError(
        f"{where}.kind: must be one of timestamp, case, whitespace, number; got {kind!r}"
    )


_NORMALISER_KEYS = {"path", "kind", "mode", "unit", "digits"}


# ---------------------------------------------------------------- rule records


@dataclass(frozen=True)
class Tolerance:
    abs: float = 0.0
    rel: float = 0.0

    def accepts(self, a: float, b: float) -> bool:
        diff = abs(a - b)
        return diff <= self.abs or diff <= self.rel * max(abs(a), abs(b))


@dataclass
class EndpointRules:
    """The rules for one endpoint (or `*` for defaults). Paths are validated on creation."""

    endpoint: str = "*"
    ignore: list[str] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)
    tolerance: list[dict[str, Any]] = field(default_factory=list)
    unordered: list[dict[str, Any]] = field(default_factory=list)
    normalize: list[dict[str, Any]] = field(default_factory=list)
    headers_allow: list[str] = field(default_factory=list)
    headers_deny: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "") -> None:
        where = where or f"rules for {self.endpoint!r}"
        if self.endpoint != "*":
            try:
                EndpointPattern.parse(self.endpoint)
            except RulesError as exc:
                raise RulesError(f"{where}.endpoint: {exc}") from None
        for name in ("ignore", "noise"):
            values = getattr(self, name)
            _require_list(values, f"{where}.{name}")
            for i, p in enumerate(values):
                _check_path(p, f"{where}.{name}[{i}]", allow_plain=(name == "noise"))
        for name in ("headers_allow", "headers_deny"):
            values = getattr(self, name)
            _require_list(values, f"{where}.{name}")
            for i, h in enumerate(values):
                if not isinstance(h, str) or not h:
                    raise RulesError(f"{where}.{name}[{i}]: must be a header name")
            setattr(self, name, [h.lower() for h in values])
        _require_list(self.tolerance, f"{where}.tolerance")
        for i, t in enumerate(self.tolerance):
            w = f"{where}.tolerance[{i}]"
            _check_keys(t, {"path", "abs", "rel"}, w)
            _check_path(t.get("path"), f"{w}.path")
            for k in ("abs", "rel"):
                v = t.get(k, 0)
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    raise RulesError(f"{w}.{k}: must be a number >= 0, got {v!r}")
            if not t.get("abs") and not t.get("rel"):
                raise RulesError(f"{w}: give 'abs' and/or 'rel' greater than 0")
        _require_list(self.unordered, f"{where}.unordered")
        for i, u in enumerate(self.unordered):
            w = f"{where}.unordered[{i}]"
            _check_keys(u, {"path", "key"}, w)
            _check_path(u.get("path"), f"{w}.path")
            if u.get("key") is not None and not isinstance(u.get("key"), str):
                raise RulesError(f"{w}.key: must be a field name")
        _require_list(self.normalize, f"{where}.normalize")
        for i, n in enumerate(self.normalize):
            w = f"{where}.normalize[{i}]"
            _check_keys(n, _NORMALISER_KEYS, w)
            _check_path(n.get("path"), f"{w}.path")
            _make_normaliser(n, w)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"endpoint": self.endpoint} if self.endpoint != "*" else {}
        for name in (
            "ignore",
            "noise",
            "tolerance",
            "unordered",
            "normalize",
            "headers_allow",
            "headers_deny",
        ):
            value = getattr(self, name)
            if value:
                out[name] = [dict(v) if isinstance(v, dict) else v for v in value]
        return out

    def merged(self, other: EndpointRules) -> EndpointRules:
        return EndpointRules(
            endpoint=other.endpoint,
            ignore=_dedupe(self.ignore + other.ignore),
            noise=_dedupe(self.noise + other.noise),
            tolerance=self.tolerance + other.tolerance,
            unordered=self.unordered + other.unordered,
            normalize=self.normalize + other.normalize,
            headers_allow=_dedupe(self.headers_allow + other.headers_allow),
            headers_deny=_dedupe(self.headers_deny + other.headers_deny),
        )


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _require_list(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise RulesError(f"{where}: must be a list, got {type(value).__name__}")


def _check_keys(value: Any, allowed: set[str], where: str) -> None:
    if not isinstance(value, Mapping):
        raise RulesError(f"{where}: must be a table/object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise RulesError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _check_path(value: Any, where: str, *, allow_plain: bool = False) -> None:
    if not isinstance(value, str) or not value:
        raise RulesError(f"{where}: must be a path string like '$.items[*].id'")
    if allow_plain and not value.startswith("$"):
        if value == "status" or value.startswith("headers.") or value.startswith("line:"):
            return
    try:
        parse_pattern(value)
    except PathSyntaxError as exc:
        raise RulesError(f"{where}: {exc}") from None


# ---------------------------------------------------------------- compiled rules

IGNORE, TOLERANCE, UNORDERED, NORMALISE = "ignore", "tolerance", "unordered", "normalise"


@dataclass
class CompiledRules:
    """Rules for one endpoint ready for the comparator: one matcher, one action per pattern."""

    rules: EndpointRules

    def __post_init__(self) -> None:
        r = self.rules
        patterns: list[str] = []
        actions: list[tuple[str, Any]] = []
        for p in r.ignore:
            patterns.append(p)
            actions.append((IGNORE, None))
        for t in r.tolerance:
            patterns.append(t["path"])
            actions.append((TOLERANCE, Tolerance(float(t.get("abs", 0)), float(t.get("rel", 0)))))
        for u in r.unordered:
            patterns.append(u["path"])
            actions.append((UNORDERED, u.get("key")))
        for n in r.normalize:
            patterns.append(n["path"])
            actions.append((NORMALISE, _make_normaliser(n, "normalize")))
        self.matcher: PathMatcher | None = PathMatcher.compile(patterns) if patterns else None
        self.actions: tuple[tuple[str, Any], ...] = tuple(actions)
        body_noise = [p for p in r.noise if p.startswith("$")]
        self.noise_matcher: PathMatcher | None = (
            PathMatcher.compile(body_noise) if body_noise else None
        )
        self.plain_noise = frozenset(p for p in r.noise if not p.startswith("$"))
        allow = set(r.headers_allow)
        self.all_headers = "*" in allow
        self.header_deny = frozenset(r.headers_deny)
        self.header_names = frozenset(
            (allow - {"*"} - self.header_deny) | set(ALWAYS_COMPARED_HEADERS)
        )

    def headers_to_compare(
        self, control: Mapping[str, str], candidate: Mapping[str, str]
    ) -> list[str]:
        if not self.all_headers:
            return sorted(self.header_names)
        names = (set(control) | set(candidate)) - VOLATILE_HEADERS - self.header_deny
        return sorted(names | self.header_names)

    def is_noise(self, path: str, extra: Iterable[str] = ()) -> bool:
        """True when `path` (or an ancestor) is a declared noise path."""
        if not path.startswith("$"):
            return path in self.plain_noise or path in set(extra)
        if self.noise_matcher is not None:
            try:
                segs = parse_concrete(path)
            except PathSyntaxError:
                return False
            if self.noise_matcher.matching(segs, prefixes=True):
                return True
        return False


class RuleSet:
    """All rules of a comparison: defaults plus per-endpoint sections."""

    def __init__(
        self,
        defaults: EndpointRules | None = None,
        endpoints: Sequence[EndpointRules] = (),
    ) -> None:
        self.defaults = defaults or EndpointRules()
        self.endpoints: list[EndpointRules] = list(endpoints)
        self._patterns = [EndpointPattern.parse(e.endpoint) for e in self.endpoints]
        self._compiled: dict[str, CompiledRules] = {}

    @classmethod
    def empty(cls) -> RuleSet:
        return cls()

    def endpoint_patterns(self) -> list[str]:
        return [e.endpoint for e in self.endpoints]

    def rules_for(self, endpoint: str) -> EndpointRules:
        """Defaults merged with every section whose pattern is `endpoint` or matches it."""
        merged = EndpointRules(**{**self.defaults.__dict__, "endpoint": endpoint})
        parts = endpoint.split(None, 1)
        for rules, pattern in zip(self.endpoints, self._patterns, strict=True):
            if rules.endpoint == endpoint or pattern.label == endpoint:
                merged = merged.merged(EndpointRules(**{**rules.__dict__, "endpoint": endpoint}))
            elif len(parts) == 2 and "<" not in parts[1] and pattern.matches(parts[0], parts[1]):
                merged = merged.merged(EndpointRules(**{**rules.__dict__, "endpoint": endpoint}))
        return merged

    def compiled(self, endpoint: str) -> CompiledRules:
        hit = self._compiled.get(endpoint)
        if hit is None:
            hit = CompiledRules(self.rules_for(endpoint))
            self._compiled[endpoint] = hit
        return hit

    def with_noise(self, noise: Mapping[str, Iterable[str]]) -> RuleSet:
        """A copy with extra noise paths per endpoint (how learned noise becomes rules)."""
        endpoints = [EndpointRules(**{**e.__dict__}) for e in self.endpoints]
        by_name = {e.endpoint: e for e in endpoints}
        for endpoint, paths in noise.items():
            target = by_name.get(endpoint)
            if target is None:
                target = EndpointRules(endpoint=endpoint)
                endpoints.append(target)
                by_name[endpoint] = target
            target.noise = _dedupe(target.noise + sorted(paths))
            target.validate()
        return RuleSet(EndpointRules(**self.defaults.__dict__), endpoints)

    # ------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        defaults = self.defaults.to_dict()
        if defaults:
            out["defaults"] = defaults
        if self.endpoints:
            out["endpoints"] = [e.to_dict() for e in self.endpoints]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleSet:
        if not isinstance(data, Mapping):
            raise RulesError(f"rules: must be a table/object, got {type(data).__name__}")
        _check_keys(data, {"defaults", "endpoints"}, "rules")
        defaults = _section(data.get("defaults") or {}, "defaults", default_endpoint=True)
        raw = data.get("endpoints") or []
        _require_list(raw, "endpoints")
        endpoints = [_section(e, f"endpoints[{i}]") for i, e in enumerate(raw)]
        return cls(defaults, endpoints)

    @classmethod
    def from_toml(cls, text: str) -> RuleSet:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"rules: invalid TOML: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        """Load `.toml` or `.json` rules from a file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise RulesError(f"rules file {p}: {exc.strerror or exc}") from None
        if p.suffix.lower() == ".json":
            try:
                return cls.from_dict(json.loads(text))
            except json.JSONDecodeError as exc:
                raise RulesError(f"rules file {p}: invalid JSON: {exc}") from None
        try:
            return cls.from_toml(text)
        except RulesError as exc:
            raise RulesError(f"rules file {p}: {exc}") from None

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix.lower() == ".json":
            p.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        else:
            p.write_text(self.to_toml(), encoding="utf-8")


_SECTION_KEYS = {
    "endpoint",
    "ignore",
    "noise",
    "tolerance",
    "unordered",
    "normalize",
    "headers_allow",
    "headers_deny",
}


def _section(data: Any, where: str, *, default_endpoint: bool = False) -> EndpointRules:
    _check_keys(data, _SECTION_KEYS, where)
    if not default_endpoint and not isinstance(data.get("endpoint"), str):
        raise RulesError(f"{where}.endpoint: required, e.g. 'GET /products/<int:id>'")
    kwargs = {k: (list(v) if isinstance(v, list | tuple) else v) for k, v in data.items()}
    kwargs["endpoint"] = data.get("endpoint", "*") if not default_endpoint else "*"
    for key in ("tolerance", "unordered", "normalize"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = [dict(x) if isinstance(x, Mapping) else x for x in kwargs[key]]
    rules = EndpointRules.__new__(EndpointRules)
    for name in _SECTION_KEYS:
        setattr(rules, name, kwargs.get(name, "*" if name == "endpoint" else []))
    rules.validate(where)
    return rules


# ---------------------------------------------------------------- tiny TOML writer


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list) and all(not isinstance(v, dict) for v in value):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else json.dumps(key)


def dump_toml(data: Mapping[str, Any]) -> str:
    """Write the rules shape (tables, arrays of tables, scalars, inline tables) as TOML."""
    lines: list[str] = []
    defaults = data.get("defaults")
    if defaults:
        lines.append("[defaults]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in defaults.items())
        lines.append("")
    for section in data.get("endpoints", []):
        lines.append("[[endpoints]]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in section.items())
        lines.append("")
    return "\n".join(lines)
