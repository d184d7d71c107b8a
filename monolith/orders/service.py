"""Orders service: order placement, the status lifecycle and sales queries.

Placement runs in the caller's single transaction: customer check (customers service),
pricing (catalog service), reservation of every line (inventory service). Any failure raises
before commit, so the caller's rollback leaves no order, no line and no reservation behind.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from monolith.catalog import service as catalog
from monolith.customers import service as customers
from monolith.inventory import service as inventory
from monolith.orders.models import Order, OrderLine
from shoplib.errors import conflict, not_found, validation_error
from shoplib.money import money
from shoplib.pagination import PageRequest
from shoplib.querying import fetch_page, order_by
from shoplib.timefmt import iso, utcnow

#: Sort names of `GET /orders` and the columns they order by.
ORDER_SORTS: dict[str, Any] = {
    "id": Order.id,
    "created_at": Order.created_at,
    "total": Order.total_cents,
}
ORDER_STATUSES = ("pending", "paid", "shipped", "cancelled")


@dataclass(frozen=True)
class Transition:
    """One lifecycle action: the statuses it may start from, where it leads, its side effect."""

    allowed_from: tuple[str, ...]
    to: str
    effect: Callable[[Session, int], None] | None = None


TRANSITIONS: dict[str, Transition] = {
    "pay": Transition(("pending",), "paid"),
    "ship": Transition(("paid",), "shipped", inventory.commit),
    "cancel": Transition(("pending", "paid"), "cancelled", inventory.release),
}


@dataclass(frozen=True)
class OrderFilter:
    customer_id: int | None = None
    status: str | None = None


@dataclass(frozen=True)
class SaleLine:
    """One sold order line, as the reports module sees it."""

    order_id: int
    product_id: int
    quantity: int
    line_total_cents: int


@dataclass(frozen=True)
class ProductSales:
    product_id: int
    units: int
    revenue_cents: int


def _line_dict(line: OrderLine, currency: str) -> dict[str, Any]:
    return {
        "product_id": line.product_id,
        "quantity": line.quantity,
        "unit_price": money(line.unit_price_cents, currency),
        "line_total": money(line.line_total_cents, currency),
    }


def order_dict(order: Order, lines: Sequence[OrderLine]) -> dict[str, Any]:
    return {
        "id": order.id,
        "customer_id": order.customer_id,
        "status": order.status,
        "lines": [_line_dict(line, order.currency) for line in lines],
        "total": money(order.total_cents, order.currency),
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
    }


def _lines_of(session: Session, order_ids: Sequence[int]) -> dict[int, list[OrderLine]]:
    grouped: dict[int, list[OrderLine]] = defaultdict(list)
    if order_ids:
        statement = (
            select(OrderLine).where(OrderLine.order_id.in_(order_ids)).order_by(OrderLine.id)
        )
        for line in session.scalars(statement):
            grouped[line.order_id].append(line)
    return grouped


def list_orders(
    session: Session, page: PageRequest, filters: OrderFilter
) -> tuple[list[dict[str, Any]], int]:
    statement = select(Order)
    if filters.customer_id is not None:
        statement = statement.where(Order.customer_id == filters.customer_id)
    if filters.status is not None:
        statement = statement.where(Order.status == filters.status)
    rows, total = fetch_page(session, statement, page, order_by(page, ORDER_SORTS, Order.id))
    lines = _lines_of(session, [row.id for row in rows])
    return [order_dict(row, lines[row.id]) for row in rows], total


def _order(session: Session, order_id: int) -> Order:
    order = session.get(Order, order_id)
    if order is None:
        raise not_found("order", order_id)
    return order


def get_order(session: Session, order_id: int) -> dict[str, Any]:
    order = _order(session, order_id)
    return order_dict(order, _lines_of(session, [order_id])[order_id])


def place_order(
    session: Session, customer_id: int, lines: Sequence[tuple[int, int]]
) -> dict[str, Any]:
    """Create a pending order for (product_id, quantity) lines, reserving all stock or none."""
    problems: dict[str, str] = {}
    if not customers.customer_exists(session, customer_id):
        problems["customer_id"] = catalog.DOES_NOT_EXIST
    products = catalog.products_by_ids(session, [product_id for product_id, _ in lines])
    for index, (product_id, _quantity) in enumerate(lines):
        product = products.get(product_id)
        if product is None:
            problems[f"lines[{index}].product_id"] = catalog.DOES_NOT_EXIST
        elif not product.active:
            problems[f"lines[{index}].product_id"] = "is not active"
    currencies = {product.currency for product in products.values()}
    if not problems and len(currencies) > 1:
        problems["lines"] = "products are priced in more than one currency"
    if problems:
        raise validation_error(problems)

    now = utcnow()
    priced = [(products[pid], quantity) for pid, quantity in lines]
    order = Order(
        customer_id=customer_id,
        status="pending",
        total_cents=sum(product.price_cents * quantity for product, quantity in priced),
        currency=priced[0][0].currency,
        created_at=now,
        updated_at=now,
    )
    session.add(order)
    session.flush()
    order_lines = [
        OrderLine(
            order_id=order.id,
            product_id=product.id,
            quantity=quantity,
            unit_price_cents=product.price_cents,
            line_total_cents=product.price_cents * quantity,
        )
        for product, quantity in priced
    ]
    session.add_all(order_lines)
    session.flush()
    inventory.reserve(session, order.id, list(lines))
    return order_dict(order, order_lines)


def transition(session: Session, order_id: int, action: str) -> dict[str, Any]:
    """Apply a lifecycle action (`pay`, `ship`, `cancel`) with its stock side effect.

    The status change is a conditional UPDATE, so of two concurrent actions on one order
    exactly one wins; the loser sees 409 `invalid_state`.
    """
    rule = TRANSITIONS[action]
    changed = session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status.in_(rule.allowed_from))
        .values(status=rule.to, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        current = session.scalar(select(Order.status).where(Order.id == order_id))
        if current is None:
            raise not_found("order", order_id)
        raise conflict(f"cannot {action} an order that is {current}", code="invalid_state")
    if rule.effect is not None:
        rule.effect(session, order_id)
    session.expire_all()
    return get_order(session, order_id)


# --- for the reports module -------------------------------------------------------------------


def _sold(start: datetime, end: datetime, currency: str) -> list[Any]:
    return [
        Order.status != "cancelled",
        Order.created_at >= start,
        Order.created_at < end,
        Order.currency == currency,
    ]


def iter_sales(
    session: Session, start: datetime, end: datetime, currency: str, batch: int = 5000
) -> Iterator[SaleLine]:
    """Every non-cancelled order line created in [start, end) in `currency`, streamed."""
    statement = (
        select(
            OrderLine.order_id, OrderLine.product_id, OrderLine.quantity, OrderLine.line_total_cents
        )
        .join(Order, Order.id == OrderLine.order_id)
        .where(*_sold(start, end, currency))
        .order_by(OrderLine.id)
        .execution_options(yield_per=batch)
    )
    for row in session.execute(statement):
        yield SaleLine(row.order_id, row.product_id, row.quantity, row.line_total_cents)


def top_product_sales(
    session: Session, start: datetime, end: datetime, currency: str, limit: int
) -> list[ProductSales]:
    """Best sellers by revenue (then units, then product id) in [start, end)."""
    revenue = func.sum(OrderLine.line_total_cents)
    units = func.sum(OrderLine.quantity)
    statement = (
        select(OrderLine.product_id, units.label("units"), revenue.label("revenue"))
        .join(Order, Order.id == OrderLine.order_id)
        .where(*_sold(start, end, currency))
        .group_by(OrderLine.product_id)
        .order_by(revenue.desc(), units.desc(), OrderLine.product_id)
        .limit(limit)
    )
    return [
        ProductSales(row.product_id, int(row.units), int(row.revenue))
        for row in session.execute(statement)
    ]
