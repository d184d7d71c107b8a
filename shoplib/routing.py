"""Routing helpers both sides need so that unmatched ids answer identically.

`<int:...>` path segments are bounded to what a database integer column can hold (PostgreSQL
int4); larger ids cannot exist, and refusing them in routing keeps them from reaching the
driver (where SQLite raises OverflowError) and answers the usual 404 "no such resource" —
the same body on the monolith and on every service (all use `shoplib.app.build_app`).
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter

# The largest value an `int` column holds on every backend we support (PostgreSQL int4).
MAX_INT = 2_147_483_647


class BoundedIntConverter(IntegerConverter):
    """`<int:...>` that only matches 0..MAX_INT."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:  # noqa: A002
        kwargs.setdefault("max", MAX_INT)
        super().__init__(map, *args, **kwargs)


def use_bounded_ints(app: Flask) -> None:
    """Make `<int:...>` bounded for every route registered after this call."""
    app.url_map.converters["int"] = BoundedIntConverter
