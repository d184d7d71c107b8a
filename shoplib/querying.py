"""List-query plumbing shared by the monolith and the services (one behaviour, so parity holds):
sorting with a total order, and one page of rows plus the count of all matching rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from shoplib.pagination import PageRequest


def order_by(
    page: PageRequest, columns: Mapping[str, ColumnElement[Any]], tiebreak: ColumnElement[Any]
) -> list[ColumnElement[Any]]:
    """The ORDER BY for `page.sort`: the named column, then `tiebreak` ascending for ties."""
    column = columns[page.sort_field]
    primary = column.desc() if page.descending else column.asc()
    if column is tiebreak:
        return [primary]
    return [primary, tiebreak.asc()]


def fetch_page(
    session: Session,
    statement: Select[Any],
    page: PageRequest,
    ordering: Sequence[ColumnElement[Any]],
) -> tuple[list[Any], int]:
    """One page of `statement`'s rows in `ordering`, and the total number of matching rows."""
    total = session.scalar(select(func.count()).select_from(statement.order_by(None).subquery()))
    rows = list(
        session.scalars(statement.order_by(*ordering).offset(page.offset).limit(page.per_page))
    )
    return rows, int(total or 0)
