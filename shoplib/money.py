"""Money as integer cents plus an ISO 4217 currency code."""

from __future__ import annotations

import re
from typing import Any

# \Z, not $: "$" also matches before a trailing newline, which would let "EUR\n" through.
CURRENCY_RE = re.compile(r"^[A-Z]{3}\Z")


def money(cents: int, currency: str) -> dict[str, Any]:
    return {"cents": int(cents), "currency": currency}
