"""Coercion of JSON-borne event values to a target column's SQLAlchemy type.

Used by the sink before writing and by the verifier before comparing, so both see the same
value for the same input (ISO strings and Debezium micro-timestamps → datetime, numbers and
strings → Decimal for Numeric, 0/1 → bool, ...).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import types as sqltypes

from cdc.mapping import EXACT, to_bool

EPOCH = dt.datetime(1970, 1, 1)


def _int(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float | Decimal):
        if v != int(v):
            raise ValueError(f"{v!r} is not an integer")
        return int(v)
    text = str(v).strip()
    try:
        return int(text)
    except ValueError:
        d = Decimal(text)
        if d != d.to_integral_value():
            raise ValueError(f"{v!r} is not an integer") from None
        return int(d)


def _decimal(v: Any) -> Decimal:
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a number")
    if isinstance(v, Decimal):
        return v
    try:
        return Decimal(str(v).strip())
    except InvalidOperation:
        raise ValueError(f"{v!r} is not a number") from None


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a number")
    return float(v)


def _datetime(v: Any, tz: bool) -> dt.datetime:
    if type(v) is str:  # the usual wire form: try it as it is before normalising it
        try:
            out = dt.datetime.fromisoformat(v)
        except ValueError:
            out = dt.datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
    elif isinstance(v, dt.datetime):
        out = v
    elif isinstance(v, dt.date):
        out = dt.datetime(v.year, v.month, v.day)
    elif isinstance(v, int | float) and not isinstance(v, bool):
        out = EPOCH + dt.timedelta(microseconds=int(v))  # Debezium MicroTimestamp
    else:
        out = dt.datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
    if out.tzinfo is not None and not tz:
        out = out.astimezone(dt.UTC).replace(tzinfo=None)
    elif out.tzinfo is None and tz:
        out = out.replace(tzinfo=dt.UTC)
    return out


def _date(v: Any) -> dt.date:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return dt.date(1970, 1, 1) + dt.timedelta(days=v)  # Debezium Date
    return dt.date.fromisoformat(str(v).strip()[:10])


def _time(v: Any) -> dt.time:
    if isinstance(v, dt.time):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return (EPOCH + dt.timedelta(microseconds=v)).time()  # Debezium MicroTime
    return dt.time.fromisoformat(str(v).strip())


def _string(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    return str(v)


def _binary(v: Any) -> bytes:
    """Bytes, or base64 text (standard or URL-safe, as Debezium's binary.handling.mode writes
    it); anything else is refused rather than decoded around (b64decode skips stray
    characters unless told to validate)."""
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    text = str(v)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        try:
            return base64.b64decode(text, altchars=b"-_", validate=True)
        except binascii.Error:
            raise ValueError(f"{text[:40]!r} is not base64") from None


# A SQLite NUMERIC/DECIMAL column stores a number as a 64-bit float (SQLAlchemy binds a
# Decimal as float(value); SQLite turns decimal text into REAL too), so only a decimal that a
# float reproduces exactly survives; the sink dead-letters the others instead of rounding them.
def float_exact(d: Decimal) -> Decimal:
    """`d` when a float holds it exactly (read back as the shortest repr), else ValueError."""
    stored = Decimal(repr(float(d)))
    if stored != d and d.is_finite():
        raise ValueError(
            f"{d} would be stored as {stored}: a SQLite NUMERIC column holds a 64-bit float "
            "(about 15 significant digits); declare the target column as TEXT (String) to keep "
            "exact decimals"
        )
    return d


def stores_decimal_as_float(column_type: sqltypes.TypeEngine[Any], dialect: str | None) -> bool:
    """A fixed-point (Numeric, not Float) column of a SQLite database."""
    return (
        dialect == "sqlite"
        and isinstance(column_type, sqltypes.Numeric)
        and not isinstance(column_type, sqltypes.Float)
    )


def coercer(
    column_type: sqltypes.TypeEngine[Any], dialect: str | None = None
) -> Callable[[Any], Any]:
    """The conversion for one column type of a `dialect` database (None always stays None).

    On SQLite a fixed-point column also refuses decimals a float would round (float_exact);
    its coercer then has no ``exact`` shortcut (every value is checked) but says
    ``float_checked``.
    """
    t = column_type
    exact: type | None = None  # a value of exactly this type is returned as it is
    if stores_decimal_as_float(t, dialect):

        def checked(v: Any) -> Any:
            return None if v is None else float_exact(_decimal(v))

        checked.float_checked = True  # type: ignore[attr-defined]
        return checked
    if isinstance(t, sqltypes.Boolean):
        fn: Callable[[Any], Any] = to_bool
        exact = bool
    elif isinstance(t, sqltypes.Float):
        fn = _float
        exact = float
    elif isinstance(t, sqltypes.Numeric):
        fn = _decimal
        exact = Decimal
    elif isinstance(t, sqltypes.Integer):
        fn = _int
        exact = int
    elif isinstance(t, sqltypes.DateTime):
        tz = bool(getattr(t, "timezone", False))

        def fn(v: Any) -> Any:
            return _datetime(v, tz)
    elif isinstance(t, sqltypes.Date):
        fn = _date
    elif isinstance(t, sqltypes.Time):
        fn = _time
    elif isinstance(t, sqltypes.JSON):

        def fn(v: Any) -> Any:
            return v
    elif isinstance(t, sqltypes.String | sqltypes.Enum):
        fn = _string
        exact = str
    elif isinstance(t, sqltypes.LargeBinary):
        fn = _binary
    else:

        def fn(v: Any) -> Any:
            return v

    if exact is not None:
        # The common case (the value already has the column's type) costs one type check.
        def convert_exact(v: Any) -> Any:
            return v if v is None or type(v) is exact else fn(v)

        convert_exact.exact = exact  # type: ignore[attr-defined]  # generated code inlines the check
        return convert_exact

    def convert(v: Any) -> Any:
        return None if v is None else fn(v)

    return convert


def canonical(value: Any) -> Any:
    """A comparable, JSON-able form of a coerced value (for checksums)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal | float):
        d = Decimal(str(value)) if isinstance(value, float) else value
        if d == d.to_integral_value():
            return str(d.quantize(Decimal(1), context=EXACT))
        return str(d.normalize(EXACT))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value
