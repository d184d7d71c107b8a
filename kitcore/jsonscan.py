"""Byte scans that tell when a fast JSON parser's reading of a text can be trusted.

orjson reads every integer of int64 and uint64 exactly but one beyond them as a float, which
would make two different ids compare equal (parity) or store a rounded value (CDC). Both
parse with orjson and re-read with the standard library only when this scan says so.
"""

from __future__ import annotations

_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TWENTY_DIGITS = b"0" * 20
_MINUS_NINETEEN_DIGITS = b"-" + b"0" * 19


def may_hold_big_int(value: bytes | str) -> bool:
    """False when the text holds no integer beyond 64 bits, so orjson reads it exactly.

    Such an integer needs at least 20 digits, or a minus sign and 19; a byte scan, several
    times cheaper than a second parse.
    """
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    digits = raw.translate(_DIGITS_AS_ZERO)
    return digits.find(_TWENTY_DIGITS) >= 0 or digits.find(_MINUS_NINETEEN_DIGITS) >= 0
