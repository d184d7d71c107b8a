"""Reports HTTP endpoints: parse the date range and call the reports service."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from monolith.reports import service
from shoplib.db import session
from shoplib.money import CURRENCY_RE
from shoplib.pagination import QueryArgs

DEFAULT_CURRENCY = "EUR"
MAX_TOP_LIMIT = 100


def _range_and_currency(args: QueryArgs) -> tuple[service.DateRange | None, str]:
    first = args.day("from", required=True)
    last = args.day("to", required=True)
    currency = args.text("currency", 3) or DEFAULT_CURRENCY
    if not CURRENCY_RE.match(currency):
        args.problems["currency"] = "must be three upper-case letters"
    if first is not None and last is not None and last < first:
        args.problems["to"] = "must not be before from"
    if first is None or last is None:
        return None, currency
    return service.DateRange(first, last), currency


def reports_blueprint() -> Blueprint:
    """`/reports/...`."""
    blueprint = Blueprint("reports", __name__)

    @blueprint.get("/reports/sales-by-category")
    def sales_by_category() -> Any:
        args = QueryArgs(request.args)
        days, currency = _range_and_currency(args)
        args.finish()
        assert days is not None
        return service.sales_by_category(session(), days, currency)

    @blueprint.get("/reports/top-products")
    def top_products() -> Any:
        args = QueryArgs(request.args)
        days, currency = _range_and_currency(args)
        limit = args.integer("limit", minimum=1, maximum=MAX_TOP_LIMIT) or 10
        args.finish()
        assert days is not None
        return service.top_products(session(), days, currency, limit)

    return blueprint
