"""List query parsing and the pagination envelope shared by every list endpoint."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from shoplib.errors import invalid_query
from shoplib.routing import MAX_INT
from shoplib.timefmt import parse_date

MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
# Larger integers would overflow database integer columns (PostgreSQL int4, SQLite int64
# binding) and turn a bad query into a 500; refuse them as a 400 instead.
MAX_QUERY_INT = MAX_INT


@dataclass(frozen=True)
class PageRequest:
    """Validated `page`, `per_page` and `sort` of a list request."""

    page: int
    per_page: int
    sort_field: str
    descending: bool

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def sort(self) -> str:
        return ("-" if self.descending else "") + self.sort_field


class QueryArgs:
    """Typed access to query parameters; every problem is collected into one 400."""

    def __init__(self, args: Mapping[str, str]) -> None:
        self.args = args
        self.problems: dict[str, str] = {}

    def _parse(self, name: str, parse: Callable[[str], Any], what: str) -> Any:
        raw = self.args.get(name)
        if raw is None or raw == "":
            return None
        try:
            return parse(raw)
        except ValueError:
            self.problems[name] = f"must be {what}"
            return None

    def integer(
        self, name: str, minimum: int | None = None, maximum: int = MAX_QUERY_INT
    ) -> int | None:
        value = self._parse(name, int, "an integer")
        if value is not None and minimum is not None and value < minimum:
            self.problems[name] = f"must be at least {minimum}"
            return None
        if value is not None and value > maximum:
            self.problems[name] = f"must be at most {maximum}"
            return None
        return value

    def boolean(self, name: str) -> bool | None:
        return self._parse(name, _parse_bool, "true or false")

    def day(self, name: str, required: bool = False) -> date | None:
        if required and not self.args.get(name):
            self.problems[name] = "is required (YYYY-MM-DD)"
            return None
        return self._parse(name, parse_date, "a YYYY-MM-DD date")

    def text(self, name: str, max_length: int = 200) -> str | None:
        value = self.args.get(name)
        if value is not None and len(value) > max_length:
            self.problems[name] = f"must be at most {max_length} characters"
            return None
        return value or None

    def choice(self, name: str, choices: Sequence[str]) -> str | None:
        value = self.args.get(name)
        if value and value not in choices:
            self.problems[name] = f"must be one of {', '.join(choices)}"
            return None
        return value or None

    def page(self, sortable: Collection[str], default_sort: str = "id") -> PageRequest:
        page = self.integer("page", minimum=1) or 1
        per_page = self.integer("per_page", minimum=1) or DEFAULT_PER_PAGE
        if per_page > MAX_PER_PAGE:
            self.problems["per_page"] = f"must be at most {MAX_PER_PAGE}"
        sort = self.args.get("sort") or default_sort
        field = sort.removeprefix("-")
        if field not in sortable:
            self.problems["sort"] = (
                f"must be one of {', '.join(sortable)} (prefix - for descending)"
            )
            field = default_sort
        return PageRequest(page, per_page, field, sort.startswith("-"))

    def finish(self) -> None:
        """Raise the collected 400, if anything was wrong."""
        if self.problems:
            raise invalid_query(self.problems)


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError(raw)


def page_envelope(
    items: list[dict[str, Any]],
    total: int,
    page: PageRequest,
    path: str,
    args: Mapping[str, str],
) -> dict[str, Any]:
    """The list response: items, paging numbers and `next`/`prev` relative links."""

    def link(number: int) -> str:
        query = {key: value for key, value in args.items() if key != "page"}
        query.update(page=str(number), per_page=str(page.per_page), sort=page.sort)
        return f"{path}?{urlencode(sorted(query.items()))}"

    has_next = page.offset + len(items) < total
    has_prev = page.page > 1
    return {
        "items": items,
        "page": page.page,
        "per_page": page.per_page,
        "total": total,
        "next": link(page.page + 1) if has_next else None,
        "prev": link(page.page - 1) if has_prev else None,
    }
