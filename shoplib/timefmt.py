"""UTC timestamps in one format everywhere: `2026-11-21T22:05:27.123456Z`."""

from __future__ import annotations

from datetime import UTC, date, datetime


def utcnow() -> datetime:
    """Naive UTC now, microsecond precision (stored naive; always UTC by convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    """Render a UTC datetime (naive or aware) with microseconds and a `Z`."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_date(text: str) -> date:
    """Parse `YYYY-MM-DD`; raises ValueError otherwise."""
    return date.fromisoformat(text) if len(text) == 10 else _reject(text)


def _reject(text: str) -> date:
    raise ValueError(f"{text!r} is not a YYYY-MM-DD date")
