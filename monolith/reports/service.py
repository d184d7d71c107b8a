"""Reports: sales per category and top products, built from the orders and catalog services.

No SQL joins across modules: order lines come from `orders.service`, names and categories
from `catalog.service`, and the two are combined here in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy.orm import Session

from monolith.catalog import service as catalog
from monolith.orders import service as orders
from shoplib.money import money

DELETED_CATEGORY_NAME = "(deleted products)"


@dataclass(frozen=True)
class DateRange:
    """Inclusive UTC days [first, last]."""

    first: date
    last: date

    def bounds(self) -> tuple[datetime, datetime]:
        """[start, end) datetimes covering the days."""
        return datetime.combine(self.first, time()), datetime.combine(
            self.last + timedelta(days=1), time()
        )


@dataclass
class _Bucket:
    orders: set[int] = field(default_factory=set)
    units: int = 0
    revenue: int = 0


def sales_by_category(session: Session, days: DateRange, currency: str) -> dict[str, Any]:
    """Per category: distinct orders, units and revenue of non-cancelled orders in the range."""
    start, end = days.bounds()
    per_product: dict[int, _Bucket] = {}
    for line in orders.iter_sales(session, start, end, currency):
        bucket = per_product.setdefault(line.product_id, _Bucket())
        bucket.orders.add(line.order_id)
        bucket.units += line.quantity
        bucket.revenue += line.line_total_cents
    products = catalog.products_by_ids(session, per_product)
    per_category: dict[int | None, _Bucket] = {}
    for product_id, sold in per_product.items():
        product = products.get(product_id)
        key = product.category_id if product is not None else None
        bucket = per_category.setdefault(key, _Bucket())
        bucket.orders |= sold.orders
        bucket.units += sold.units
        bucket.revenue += sold.revenue
    names = catalog.category_names(session, [key for key in per_category if key is not None])
    ordered = sorted(
        per_category.items(),
        key=lambda item: (-item[1].revenue, item[0] is None, item[0] or 0),
    )
    rows = [
        {
            "category_id": category_id,
            "category_name": DELETED_CATEGORY_NAME
            if category_id is None
            else names.get(category_id, DELETED_CATEGORY_NAME),
            "orders": len(bucket.orders),
            "units": bucket.units,
            "revenue": money(bucket.revenue, currency),
        }
        for category_id, bucket in ordered
    ]
    return {
        "from": days.first.isoformat(),
        "to": days.last.isoformat(),
        "currency": currency,
        "rows": rows,
    }


def top_products(session: Session, days: DateRange, currency: str, limit: int) -> dict[str, Any]:
    """Best-selling products by revenue in the range; deleted products have name null."""
    start, end = days.bounds()
    sales = orders.top_product_sales(session, start, end, currency, limit)
    products = catalog.products_by_ids(session, [sale.product_id for sale in sales])
    rows = []
    for sale in sales:
        product = products.get(sale.product_id)
        rows.append(
            {
                "product_id": sale.product_id,
                "name": product.name if product is not None else None,
                "units": sale.units,
                "revenue": money(sale.revenue_cents, currency),
            }
        )
    return {"from": days.first.isoformat(), "to": days.last.isoformat(), "rows": rows}
