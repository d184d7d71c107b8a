"""Declarative mapping engine: how one source row becomes one target row (and back).

The format is documented in docs/mapping.md. Loading validates everything up front so that a
mistake in a mapping file is reported once, naming the table and column at fault, instead of
surfacing later as a dead-lettered event.
"""

from __future__ import annotations

import tomllib
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any


class MappingError(ValueError):
    """A mapping file is invalid, or a row cannot be mapped; the message names table/column."""


# ---------------------------------------------------------------------------------------------
# transforms


TransformFn = Callable[[Sequence[Any], Mapping[str, Any]], Any]


# Decimal arithmetic rounds to its context's precision (28 digits by default): a NUMERIC(38,10)
# value would lose digits. Every scaling, normalising and decoding of a decimal uses this one.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _t_copy(values: Sequence[Any], args: Mapping[str, Any]) -> Any:
    return values[0]


def _t_scale(values: Sequence[Any], args: Mapping[str, Any]) -> Any:
    value = values[0]
    if value is None:
        return None
    exp = int(args["exp"])
    if type(value) is int:  # the usual case (cents): exact, no text round trip
        number = Decimal(value)
    else:
        if isinstance(value, bool):
            raise ValueError(f"cannot scale a boolean {value!r}")
        try:
            number = Decimal(str(value)) if not isinstance(value, Decimal) else value
        except InvalidOperation as exc:
            raise ValueError(f"cannot scale non-numeric value {value!r}") from exc
        if not number.is_finite():
            raise ValueError(f"cannot scale non-finite value {value!r}")
    result = number.scaleb(exp, EXACT)
    if exp >= 0 and result == result.to_integral_value():
        return int(result)
    return result


def _scale_by(args: Mapping[str, Any]) -> Callable[[Any], Any]:
    """_t_scale for one column: the exponent read once, integers scaled down directly."""
    exp = int(args["exp"])
    if exp >= 0:
        return lambda value: _t_scale((value,), args)

    def scale(value: Any) -> Any:
        if type(value) is int:
            return Decimal(value).scaleb(exp, EXACT)  # what _t_scale returns for an int, exp < 0
        return _t_scale((value,), args)

    return scale


def _string_op(fn: Callable[[str], str]) -> TransformFn:
    def apply(values: Sequence[Any], args: Mapping[str, Any]) -> Any:
        value = values[0]
        if value is None:
            return None
        return fn(str(value))

    return apply


def _t_split(values: Sequence[Any], args: Mapping[str, Any]) -> Any:
    value = values[0]
    if value is None:
        return None
    parts = str(value).split(args.get("sep", " "), int(args.get("maxsplit", 1)))
    part = int(args.get("part", 0))
    return parts[part] if part < len(parts) else None


def _t_join(values: Sequence[Any], args: Mapping[str, Any]) -> Any:
    kept = [str(v) for v in values if v is not None]
    return args.get("sep", " ").join(kept) if kept else None


# Slug words are the runs of [a-z0-9] of the lower-cased text: A-Z become a-z (what
# bytes.lower() does), every other byte becomes a space, then split.
_SLUG_BYTES = bytes(
    c if 48 <= c <= 57 or 97 <= c <= 122 else c + 32 if 65 <= c <= 90 else 32 for c in range(256)
)
_SLUG_FORMATS: dict[int, str] = {}  # value count → "%s %s ..." (the values joined by spaces)


def _t_slug(values: Sequence[Any], args: Mapping[str, Any]) -> Any:
    # The values joined by a space give the same words as each value on its own: a space is
    # a word break, and NFKD works character by character (a space stops the reordering of
    # combining marks), so one pass over the joined text is enough.
    if None in values:
        values = tuple([v for v in values if v is not None])
    elif type(values) is not tuple:
        values = tuple(values)
    fmt = _SLUG_FORMATS.get(len(values))
    if fmt is None:
        fmt = _SLUG_FORMATS[len(values)] = " ".join(["%s"] * len(values))
    text = fmt % values  # " ".join(map(str, values)), at a third of the cost
    if text.isascii():  # ASCII text is its own NFKD form: skip the round trip
        data = text.encode()
    else:
        data = unicodedata.normalize("NFKD", text).encode("ascii", "ignore")
    words = data.translate(_SLUG_BYTES).split()
    return b"-".join(words).decode() if words else None


def _t_constant(values: Sequence[Any], args: Mapping[str, Any]) -> Any:
    return args["value"]


def to_bool(value: Any) -> bool | None:
    """Truthiness as the monolith stores it: 1/0, 'true'/'false', 't'/'f', 'yes'/'no'."""
    t = type(value)
    if t is int:
        return value != 0
    if value is None or t is bool:
        return value
    if isinstance(value, int | float | Decimal):
        return value != 0
    text = str(value).strip().lower()
    if text in {"1", "true", "t", "yes", "y", "on"}:
        return True
    if text in {"0", "false", "f", "no", "n", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _t_bool(values: Sequence[Any], args: Mapping[str, Any]) -> Any:
    return to_bool(values[0])


@dataclass(frozen=True)
class TransformSpec:
    """A registered transform: its function, accepted input counts and required args.

    `unary`, when set, gives for a column's args a function of the one input value that
    returns exactly what `fn` does (the compiled mapping calls it without building the
    values tuple).
    """

    fn: TransformFn
    min_inputs: int
    max_inputs: int | None
    required_args: tuple[str, ...] = ()
    optional_args: tuple[str, ...] = ()
    unary: Callable[[Mapping[str, Any]], Callable[[Any], Any]] | None = None


TRANSFORMS: dict[str, TransformSpec] = {
    "copy": TransformSpec(_t_copy, 1, 1),
    "scale": TransformSpec(_t_scale, 1, 1, ("exp",), unary=_scale_by),
    "lower": TransformSpec(_string_op(str.lower), 1, 1),
    "upper": TransformSpec(_string_op(str.upper), 1, 1),
    "strip": TransformSpec(_string_op(str.strip), 1, 1),
    "split": TransformSpec(_t_split, 1, 1, (), ("sep", "part", "maxsplit")),
    "join": TransformSpec(_t_join, 1, None, (), ("sep",)),
    "slug": TransformSpec(_t_slug, 1, None),
    "constant": TransformSpec(_t_constant, 0, 0, ("value",)),
    "bool": TransformSpec(_t_bool, 1, 1, unary=lambda args: to_bool),
}


# ---------------------------------------------------------------------------------------------
# typed spec


@dataclass(frozen=True)
class ColumnMapping:
    """One target column computed from zero or more source columns."""

    target: str
    sources: tuple[str, ...]
    transform: str = "copy"
    args: Mapping[str, Any] = field(default_factory=dict)
    is_copy: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_copy", self.transform == "copy" and len(self.sources) == 1)

    def apply(self, row: Mapping[str, Any], table: str) -> Any:
        """Compute this column from a source row; errors name table and column."""
        try:
            values = [row[name] for name in self.sources]
        except KeyError as exc:
            raise MappingError(
                f"table {table!r}: column {self.target!r} needs source column {exc.args[0]!r}, "
                "which the row does not have"
            ) from None
        try:
            return TRANSFORMS[self.transform].fn(values, self.args)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise MappingError(
                f"table {table!r}: column {self.target!r}: transform {self.transform!r} "
                f"failed on {values!r}: {exc}"
            ) from None


FILTER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda v, a: v == a,
    "ne": lambda v, a: v != a,
    "in": lambda v, a: v in a,
    "not_in": lambda v, a: v not in a,
    "not_null": lambda v, a: v is not None,
    "is_null": lambda v, a: v is None,
}


@dataclass(frozen=True)
class RowFilter:
    """A predicate on a SOURCE column; rows failing any filter are not (or no longer) carried."""

    column: str
    op: str
    value: Any = None

    def matches(self, row: Mapping[str, Any]) -> bool:
        return FILTER_OPS[self.op](row.get(self.column), self.value)


@dataclass(frozen=True)
class TableMapping:
    """How rows of one source table map to one target table, forward and in reverse."""

    source: str
    target: str
    key: tuple[str, ...]
    columns: tuple[ColumnMapping, ...]
    strict: bool = False
    drop: tuple[str, ...] = ()
    filters: tuple[RowFilter, ...] = ()
    reverse: tuple[ColumnMapping, ...] = ()

    def __post_init__(self) -> None:
        where = f"table {self.source!r}"
        if not self.key:
            raise MappingError(f"{where}: 'key' must name at least one target column")
        targets = {c.target for c in self.columns}
        for k in self.key:
            if k not in targets:
                raise MappingError(f"{where}: key column {k!r} is not a mapped target column")
        for c in self.columns:
            if c.target in self.key and len(c.sources) != 1:
                raise MappingError(
                    f"{where}: key column {c.target!r} must come from exactly one source column"
                )

    @property
    def source_key(self) -> tuple[str, ...]:
        """Source columns feeding the target key, in key order."""
        by_target = {c.target: c for c in self.columns}
        return tuple(by_target[k].sources[0] for k in self.key)

    @property
    def used_source_columns(self) -> set[str]:
        used: set[str] = set(self.drop)
        for c in self.columns:
            used.update(c.sources)
        for f in self.filters:
            used.add(f.column)
        return used

    def matches(self, row: Mapping[str, Any]) -> bool:
        """True when the source row passes every filter."""
        return all(f.matches(row) for f in self.filters)

    def check_drift(self, row: Mapping[str, Any]) -> None:
        """In strict mode, refuse rows carrying source columns the mapping does not mention."""
        if not self.strict:
            return
        unknown = sorted(set(row) - self.used_source_columns)
        if unknown:
            raise MappingError(
                f"table {self.source!r} is strict but the row has unmapped source column(s) "
                f"{', '.join(unknown)}: map them or list them in 'drop'"
            )

    def forward(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Source row → target row (all mapped columns)."""
        self.check_drift(row)
        out: dict[str, Any] = {}
        for c in self.columns:
            if c.is_copy and c.sources[0] in row:  # fast path for plain copies
                out[c.target] = row[c.sources[0]]
            else:
                out[c.target] = c.apply(row, self.source)
        return out

    def target_key(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """Target key values of a source row (only the key columns are computed)."""
        by_target = {c.target: c for c in self.columns}
        return tuple(by_target[k].apply(row, self.source) for k in self.key)

    def compile_forward(self) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
        """forward() compiled once: a function returning the values in `columns` order.

        The benchmarks map millions of rows (the sink compiles the same expressions into its
        prepare, see forward_code); the generated function does plain item lookups for copies
        and direct transform calls, with no per-row dict or dispatch.
        Any failure re-runs forward(), so errors are exactly the reference ones.
        """
        ns: dict[str, Any] = {"_forward": self.forward}
        drift, exprs = self.forward_code(ns)
        drift = f"        {drift}\n" if drift else ""
        targets = tuple(c.target for c in self.columns)
        ns["_targets"] = targets
        src = (
            "def forward_values(row):\n"
            "    try:\n"
            f"{drift}"
            f"        return ({''.join(e + ', ' for e in exprs)})\n"
            "    except Exception:\n"
            "        pass\n"
            "    out = _forward(row)\n"
            "    return tuple(out[t] for t in _targets)\n"
        )
        exec(compile(src, f"<mapping {self.source}>", "exec"), ns)  # noqa: S102 - names are repr()-quoted
        return ns["forward_values"]

    def forward_code(self, ns: dict[str, Any]) -> tuple[str, list[str]]:
        """Source code of forward() for generated functions over a dict named ``row``.

        Returns a statement that raises KeyError on schema drift in strict mode (else "")
        and one expression per column (in `columns` order); the names they use are put into
        `ns`. Failures raise whatever the transform raises: callers fall back to forward()
        for the reference MappingError. Shared by compile_forward and the sink's prepare.
        """
        exprs = []
        for i, c in enumerate(self.columns):
            if c.is_copy:
                exprs.append(f"row[{c.sources[0]!r}]")
                continue
            spec = TRANSFORMS[c.transform]
            values = "".join(f"row[{s!r}], " for s in c.sources)
            if spec.unary is not None and len(c.sources) == 1:
                ns[f"_fm{i}"] = spec.unary(c.args)
                exprs.append(f"_fm{i}({values[:-2]})")
                continue
            ns[f"_fm{i}"], ns[f"_am{i}"] = spec.fn, c.args
            exprs.append(f"_fm{i}(({values}), _am{i})")
        if not self.strict:
            return "", exprs
        ns["_used_m"] = frozenset(self.used_source_columns)
        return "if not row.keys() <= _used_m: raise KeyError", exprs

    def compile_matches(self) -> Callable[[Mapping[str, Any]], bool] | None:
        """matches() without the generator per row; None when the table has no filters."""
        if not self.filters:
            return None
        if len(self.filters) == 1:
            f = self.filters[0]
            column = f.column
            if f.op == "not_null":
                return lambda row: row.get(column) is not None
            if f.op == "is_null":
                return lambda row: row.get(column) is None
            return f.matches
        filters = self.filters

        def matches(row: Mapping[str, Any]) -> bool:
            for f in filters:
                if not f.matches(row):
                    return False
            return True

        return matches

    def compile_target_key(self) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
        """target_key() with the key columns looked up once instead of per row."""
        by_target = {c.target: c for c in self.columns}
        cols = tuple(by_target[k] for k in self.key)
        if all(c.is_copy for c in cols):
            names = tuple(c.sources[0] for c in cols)
            fallback = self.target_key

            def copied_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
                try:
                    return tuple([row[n] for n in names])
                except KeyError:
                    return fallback(row)  # raises the reference MappingError

            return copied_key
        source = self.source
        return lambda row: tuple(c.apply(row, source) for c in cols)

    def reverse_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Target row → source row: explicit [reverse] entries, else inverted plain copies."""
        out: dict[str, Any] = {}
        explicit = {c.target for c in self.reverse}
        for c in self.reverse:
            out[c.target] = c.apply(row, self.target)
        for c in self.columns:
            if c.is_copy and c.sources[0] not in explicit and c.target in row:
                out[c.sources[0]] = row[c.target]
        return out


@dataclass(frozen=True)
class MappingSpec:
    """All table mappings of one service."""

    service: str
    tables: tuple[TableMapping, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for t in self.tables:
            if t.source in seen:
                raise MappingError(f"table {t.source!r} is mapped twice")
            seen.add(t.source)

    def for_source(self, table: str) -> TableMapping:
        """The mapping of a source table; MappingError when the table is not mapped."""
        for t in self.tables:
            if t.source == table:
                return t
        raise MappingError(f"unknown table {table!r}: not in mapping of service {self.service!r}")

    @property
    def source_tables(self) -> list[str]:
        return [t.source for t in self.tables]


# ---------------------------------------------------------------------------------------------
# parsing


def _parse_column(target: str, raw: Any, where: str) -> ColumnMapping:
    if isinstance(raw, str):
        return ColumnMapping(target, (raw,))
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: column {target!r} must be a source name or a table")
    unknown = set(raw) - {"from", "transform", "args"}
    if unknown:
        raise MappingError(f"{where}: column {target!r} has unknown key(s) {sorted(unknown)}")
    transform = raw.get("transform", "copy")
    if transform not in TRANSFORMS:
        raise MappingError(
            f"{where}: column {target!r}: unknown transform {transform!r} "
            f"(known: {', '.join(sorted(TRANSFORMS))})"
        )
    spec = TRANSFORMS[transform]
    src = raw.get("from", [])
    sources = (src,) if isinstance(src, str) else tuple(src)
    if not all(isinstance(s, str) for s in sources):
        raise MappingError(f"{where}: column {target!r}: 'from' must be names of columns")
    if len(sources) < spec.min_inputs or (
        spec.max_inputs is not None and len(sources) > spec.max_inputs
    ):
        raise MappingError(
            f"{where}: column {target!r}: transform {transform!r} takes "
            f"{spec.min_inputs}..{spec.max_inputs or 'n'} input(s), got {len(sources)}"
        )
    args = raw.get("args", {})
    if not isinstance(args, dict):
        raise MappingError(f"{where}: column {target!r}: 'args' must be a table")
    missing = [a for a in spec.required_args if a not in args]
    if missing:
        raise MappingError(f"{where}: column {target!r}: transform {transform!r} needs {missing}")
    extra = set(args) - set(spec.required_args) - set(spec.optional_args)
    if extra:
        raise MappingError(f"{where}: column {target!r}: unknown args {sorted(extra)}")
    if transform == "scale" and not isinstance(args["exp"], int):
        raise MappingError(f"{where}: column {target!r}: scale 'exp' must be an integer")
    return ColumnMapping(target, sources, transform, dict(args))


def _parse_filter(raw: Any, where: str) -> RowFilter:
    if not isinstance(raw, dict) or "column" not in raw or "op" not in raw:
        raise MappingError(f"{where}: each filter needs 'column' and 'op'")
    op = raw["op"]
    if op not in FILTER_OPS:
        raise MappingError(f"{where}: filter on {raw['column']!r}: unknown op {op!r}")
    value = raw.get("value")
    if op in {"in", "not_in"}:
        if not isinstance(value, list):
            raise MappingError(f"{where}: filter on {raw['column']!r}: {op} needs a list value")
        value = tuple(value)
    elif op in {"eq", "ne"} and "value" not in raw:
        raise MappingError(f"{where}: filter on {raw['column']!r}: {op} needs a value")
    return RowFilter(raw["column"], op, value)


def _parse_table(raw: Any, index: int) -> TableMapping:
    if not isinstance(raw, dict):
        raise MappingError(f"tables[{index}] must be a table")
    for required in ("source", "target", "key", "columns"):
        if required not in raw:
            where = f"table {raw.get('source', f'#{index}')!r}"
            raise MappingError(f"{where}: missing {required!r}")
    where = f"table {raw['source']!r}"
    allowed = {"source", "target", "key", "strict", "drop", "filter", "columns", "reverse"}
    unknown = set(raw) - allowed
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {sorted(unknown)}")
    if not isinstance(raw["columns"], dict) or not raw["columns"]:
        raise MappingError(f"{where}: 'columns' must be a non-empty table")
    key = raw["key"]
    key = (key,) if isinstance(key, str) else tuple(key)
    columns = tuple(_parse_column(t, v, where) for t, v in raw["columns"].items())
    reverse = tuple(
        _parse_column(t, v, f"{where} [reverse]") for t, v in raw.get("reverse", {}).items()
    )
    filters = tuple(_parse_filter(f, where) for f in raw.get("filter", []))
    strict = raw.get("strict", False)
    if not isinstance(strict, bool):
        raise MappingError(f"{where}: 'strict' must be true or false")
    return TableMapping(
        source=raw["source"],
        target=raw["target"],
        key=key,
        columns=columns,
        strict=strict,
        drop=tuple(raw.get("drop", [])),
        filters=filters,
        reverse=reverse,
    )


def parse_mapping(data: Mapping[str, Any]) -> MappingSpec:
    """Validate a parsed mapping document into typed classes."""
    service = data.get("service")
    if not isinstance(service, str) or not service:
        raise MappingError("mapping needs a 'service' name")
    tables = data.get("tables")
    if not isinstance(tables, list) or not tables:
        raise MappingError(f"mapping of service {service!r} has no [[tables]]")
    return MappingSpec(service, tuple(_parse_table(t, i) for i, t in enumerate(tables)))


def load_mapping(path: str | Path) -> MappingSpec:
    """Read and validate a mapping TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise MappingError(f"mapping file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping file {path} is not valid TOML: {exc}") from None
    try:
        return parse_mapping(data)
    except MappingError as exc:
        raise MappingError(f"{path}: {exc}") from None
