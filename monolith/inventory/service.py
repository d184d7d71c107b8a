"""Inventory service: stock levels and reservations, the inventory module's public API.

Every change to a stock row is one conditional UPDATE whose WHERE clause states the rule
(`on_hand - reserved >= quantity`, `result >= reserved`), and the row count says whether it
held. Concurrent gunicorn workers therefore cannot oversell: the database arbitrates.
Functions flush, never commit: the caller's transaction makes a whole order all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Row, cast, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monolith.catalog import service as catalog
from monolith.db import MAX_INT
from monolith.inventory.models import Reservation, Stock
from shoplib.errors import ApiError, conflict, not_found, validation_error
from shoplib.pagination import PageRequest
from shoplib.querying import fetch_page, order_by
from shoplib.timefmt import iso, utcnow

_AVAILABLE = Stock.on_hand - Stock.reserved
#: Sort names of `GET /inventory` and the columns they order by.
STOCK_SORTS: dict[str, Any] = {"product_id": Stock.product_id, "available": _AVAILABLE}


def stock_dict(stock: Stock | Row[Any]) -> dict[str, Any]:
    return {
        "product_id": stock.product_id,
        "on_hand": stock.on_hand,
        "reserved": stock.reserved,
        "available": stock.on_hand - stock.reserved,
        "updated_at": iso(stock.updated_at),
    }


def list_stock(
    session: Session, page: PageRequest, below: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    statement = select(Stock)
    if below is not None:
        statement = statement.where(_AVAILABLE < below)
    ordering = order_by(page, STOCK_SORTS, Stock.product_id)
    rows, total = fetch_page(session, statement, page, ordering)
    return [stock_dict(row) for row in rows], total


def _row(session: Session, product_id: int) -> Row[Any] | None:
    statement = select(Stock.product_id, Stock.on_hand, Stock.reserved, Stock.updated_at).where(
        Stock.product_id == product_id
    )
    return session.execute(statement).first()


def get_stock(session: Session, product_id: int) -> dict[str, Any]:
    row = _row(session, product_id)
    if row is None:
        raise not_found("stock for product", product_id)
    return stock_dict(row)


def _below_reserved(field: str, reserved: int) -> ApiError:
    return conflict(
        f"on_hand would fall below the {reserved} reserved unit(s)",
        fields={field: f"would leave on_hand below reserved ({reserved})"},
    )


def set_on_hand(session: Session, product_id: int, on_hand: int) -> dict[str, Any]:
    """Set the count, creating the stock row if absent; never below what is reserved."""
    if not catalog.product_exists(session, product_id):
        raise validation_error({"product_id": catalog.DOES_NOT_EXIST})
    now = utcnow()
    for _attempt in range(2):
        changed = session.execute(
            update(Stock)
            .where(Stock.product_id == product_id, Stock.reserved <= on_hand)
            .values(on_hand=on_hand, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount == 1:
            return get_stock(session, product_id)
        row = _row(session, product_id)
        if row is not None:
            raise _below_reserved("on_hand", row.reserved)
        try:
            with session.begin_nested():
                session.add(
                    Stock(product_id=product_id, on_hand=on_hand, reserved=0, updated_at=now)
                )
            return get_stock(session, product_id)
        except IntegrityError:  # another request created the row meanwhile: update it
            continue
    raise conflict(f"stock for product {product_id} is being changed concurrently; retry")


def adjust(session: Session, product_id: int, delta: int) -> dict[str, Any]:
    """Add `delta` (may be negative) to on_hand; the result must still cover reservations."""
    changed = session.execute(
        update(Stock)
        .where(
            Stock.product_id == product_id,
            # bigint arithmetic: on PostgreSQL int4 + int4 past 2^31 is an error, not False
            cast(Stock.on_hand, BigInteger) + delta >= Stock.reserved,
            cast(Stock.on_hand, BigInteger) + delta <= MAX_INT,
        )
        .values(on_hand=Stock.on_hand + delta, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount == 1:
        return get_stock(session, product_id)
    row = _row(session, product_id)
    if row is None:
        raise not_found("stock for product", product_id)
    if row.on_hand + delta > MAX_INT:
        raise validation_error({"delta": f"would raise on_hand above {MAX_INT}"})
    raise _below_reserved("delta", row.reserved)


def reserve(session: Session, order_id: int, lines: Sequence[tuple[int, int]]) -> None:
    """Hold stock for every (product_id, quantity) of an order, or raise 409 naming the short ones.

    Lines are taken in product-id order (a fixed lock order, so two orders cannot deadlock).
    On failure nothing is undone here: the caller's transaction rolls every line back.
    """
    now = utcnow()
    short: list[int] = []
    for product_id, quantity in sorted(lines):
        changed = session.execute(
            update(Stock)
            .where(Stock.product_id == product_id, _AVAILABLE >= quantity)
            .values(reserved=Stock.reserved + quantity, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:
            short.append(product_id)
    if short:
        wanted = dict(lines)
        fields = {}
        for product_id in short:
            row = _row(session, product_id)
            available = 0 if row is None else row.on_hand - row.reserved
            fields[str(product_id)] = f"requested {wanted[product_id]}, available {available}"
        raise conflict(
            "not enough stock for product(s) " + ", ".join(str(p) for p in short),
            code="insufficient_stock",
            fields=fields,
        )
    session.add_all(
        Reservation(
            order_id=order_id,
            product_id=product_id,
            quantity=quantity,
            status="held",
            created_at=now,
            updated_at=now,
        )
        for product_id, quantity in sorted(lines)
    )
    session.flush()


def _held(session: Session, order_id: int) -> list[Reservation]:
    statement = (
        select(Reservation)
        .where(Reservation.order_id == order_id, Reservation.status == "held")
        .order_by(Reservation.product_id)
    )
    return list(session.scalars(statement))


def release(session: Session, order_id: int) -> None:
    """Give an order's held stock back (cancellation)."""
    _settle(session, order_id, "released", consume=False)


def commit(session: Session, order_id: int) -> None:
    """Turn an order's held stock into shipped goods: on_hand and reserved both drop."""
    _settle(session, order_id, "committed", consume=True)


def _settle(session: Session, order_id: int, status: str, consume: bool) -> None:
    now = utcnow()
    for reservation in _held(session, order_id):
        values: dict[str, Any] = {
            "reserved": Stock.reserved - reservation.quantity,
            "updated_at": now,
        }
        if consume:
            values["on_hand"] = Stock.on_hand - reservation.quantity
        session.execute(
            update(Stock)
            .where(Stock.product_id == reservation.product_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        reservation.status = status
        reservation.updated_at = now
    session.flush()


def reservations_of(session: Session, order_id: int) -> list[dict[str, Any]]:
    """An order's reservations (for diagnostics and tests)."""
    statement = select(Reservation).where(Reservation.order_id == order_id).order_by(Reservation.id)
    return [
        {"product_id": r.product_id, "quantity": r.quantity, "status": r.status}
        for r in session.scalars(statement)
    ]
