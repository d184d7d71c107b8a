"""HTML rendering with Jinja2 (autoescaping on for every template: all data is escaped).

The environment is built on first use, not at import time, and templates ship inside the
package (no build step).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")
STATIC_FILES = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}


def fmt_time(ts: float | None) -> str:
    """UTC wall-clock time `YYYY-MM-DD HH:MM:SS` (the page's script shows local time)."""
    if ts is None:
        return "–"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fmt_num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = fmt_time
    env.filters["iso"] = iso_time
    env.filters["num"] = fmt_num
    return env


def render(name: str, **context: Any) -> str:
    """Render one template; `prefix` and `csrf` are always defined for the base layout."""
    context.setdefault("csrf", None)
    return environment().get_template(name).render(**context)


def static_file(name: str) -> tuple[bytes, str] | None:
    """Body and content type of a shipped static file; None for anything not on the list."""
    content_type = STATIC_FILES.get(name)
    if content_type is None:
        return None
    return (STATIC / name).read_bytes(), content_type
