"""Catalog domain rules: validation, lookups, writes, and the money/slug conversions.

The HTTP contract speaks money as `{cents, currency}`; this service stores an exact decimal
`price_amount`. The conversion happens only here, with exact `Decimal` arithmetic, so a price
never passes through a float. The slug is derived from the name and the id and recomputed
whenever the name changes, the same way the `slug` mapping transform computes it for rows
that arrive through change data capture.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from extracted.catalog.models import Category, Product
from shoplib.errors import ApiError, conflict, not_found, validation_error
from shoplib.money import money
from shoplib.pagination import QueryArgs, page_envelope
from shoplib.querying import fetch_page, order_by
from shoplib.routing import MAX_INT
from shoplib.timefmt import iso, utcnow
from shoplib.validation import Field, between, length, pattern, validate

ID_CHECK = between(1, MAX_INT)
DOES_NOT_EXIST = "does not exist"

CATEGORY_SPEC: dict[str, Field] = {
    "name": Field("string", required=True, checks=(length(1, 100),)),
    "parent_id": Field("integer", nullable=True, checks=(ID_CHECK,)),
}

PRODUCT_SPEC: dict[str, Field] = {
    "sku": Field(
        "string",
        required=True,
        checks=(pattern(r"[A-Z0-9-]{1,64}", "1 to 64 of A-Z 0-9 -"),),
    ),
    "name": Field("string", required=True, checks=(length(1, 200),)),
    "description": Field("string", checks=(length(0, 100_000),)),
    "category_id": Field("integer", required=True, checks=(ID_CHECK,)),
    "price": Field("money", required=True, checks=(lambda v: between(0, MAX_INT)(v["cents"]),)),
    "active": Field("boolean"),
}

PRODUCT_PATCH_SPEC: dict[str, Field] = {
    name: field for name, field in PRODUCT_SPEC.items() if name != "sku"
}

CATEGORY_SORTS: dict[str, InstrumentedAttribute[Any]] = {
    "id": Category.id,
    "name": Category.name,
}

PRODUCT_SORTS: dict[str, InstrumentedAttribute[Any]] = {
    "id": Product.id,
    "name": Product.name,
    "price": Product.price_amount,
    "created_at": Product.created_at,
}


# --------------------------------------------------------------------------------------------
# conversions at the edge


def cents_to_amount(cents: int) -> Decimal:
    """Integer cents → exact decimal amount with two places (12999 → Decimal('129.99'))."""
    return Decimal(int(cents)).scaleb(-2).quantize(Decimal("0.01"))


def amount_to_cents(amount: Decimal | int | str) -> int:
    """Exact decimal amount → integer cents; refuses amounts with fractions of a cent."""
    scaled = Decimal(str(amount)).scaleb(2)
    integral = scaled.to_integral_value()
    if scaled != integral:
        raise ValueError(f"amount {amount!r} is not a whole number of cents")
    return int(integral)


def slugify(*parts: object) -> str:
    """Lower-case ASCII words of the parts joined by '-' (`"Oak Bench", 42` → `oak-bench-42`)."""
    words: list[str] = []
    for part in parts:
        if part is None:
            continue
        text = unicodedata.normalize("NFKD", str(part)).encode("ascii", "ignore").decode()
        words.extend(re.findall(r"[a-z0-9]+", text.lower()))
    return "-".join(words)


def product_slug(name: str, product_id: int) -> str:
    return slugify(name, product_id)


# --------------------------------------------------------------------------------------------
# serialisation


def category_json(category: Category) -> dict[str, Any]:
    return {
        "id": category.id,
        "name": category.name,
        "parent_id": category.parent_id,
        "created_at": iso(category.created_at),
    }


def product_json(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "category_id": product.category_id,
        "price": money(amount_to_cents(product.price_amount), product.currency),
        "active": product.is_listed,
        "created_at": iso(product.created_at),
        "updated_at": iso(product.updated_at),
    }


# --------------------------------------------------------------------------------------------
# lookups


def get_category(session: Session, category_id: int) -> dict[str, Any]:
    category = session.get(Category, category_id)
    if category is None:
        raise not_found("category", category_id)
    return category_json(category)


def get_product(session: Session, product_id: int) -> dict[str, Any]:
    return product_json(_product_or_404(session, product_id))


def _product_or_404(session: Session, product_id: int) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise not_found("product", product_id)
    return product


def category_exists(session: Session, category_id: int) -> bool:
    return session.get(Category, category_id) is not None


def list_categories(session: Session, args: Mapping[str, str], path: str) -> dict[str, Any]:
    query = QueryArgs(args)
    page = query.page(tuple(CATEGORY_SORTS))
    parent_id = query.integer("parent_id", minimum=1)
    query.finish()
    statement = select(Category)
    if parent_id is not None:
        statement = statement.where(Category.parent_id == parent_id)
    ordering = order_by(page, CATEGORY_SORTS, Category.id)
    rows, total = fetch_page(session, statement, page, ordering)
    return page_envelope([category_json(c) for c in rows], total, page, path, args)


def list_products(session: Session, args: Mapping[str, str], path: str) -> dict[str, Any]:
    query = QueryArgs(args)
    page = query.page(tuple(PRODUCT_SORTS))
    category_id = query.integer("category_id", minimum=1)
    active = query.boolean("active")
    min_price = query.integer("min_price", minimum=0)
    max_price = query.integer("max_price", minimum=0)
    text = query.text("q")
    query.finish()
    conditions: list[ColumnElement[bool]] = []
    if category_id is not None:
        conditions.append(Product.category_id == category_id)
    if active is not None:
        conditions.append(Product.is_listed.is_(active))
    if min_price is not None:
        conditions.append(Product.price_amount >= cents_to_amount(min_price))
    if max_price is not None:
        conditions.append(Product.price_amount <= cents_to_amount(max_price))
    if text:
        conditions.append(func.lower(Product.name).contains(text.lower(), autoescape=True))
    statement = select(Product).where(*conditions)
    ordering = order_by(page, PRODUCT_SORTS, Product.id)
    rows, total = fetch_page(session, statement, page, ordering)
    return page_envelope([product_json(p) for p in rows], total, page, path, args)


# --------------------------------------------------------------------------------------------
# writes


def create_category(session: Session, payload: Mapping[str, Any]) -> dict[str, Any]:
    data = validate(payload, CATEGORY_SPEC)
    parent_id = data.get("parent_id")
    if parent_id is not None and not category_exists(session, parent_id):
        raise validation_error({"parent_id": DOES_NOT_EXIST})
    category = Category(name=data["name"], parent_id=parent_id, created_at=utcnow())
    session.add(category)
    session.commit()
    return category_json(category)


def create_product(session: Session, payload: Mapping[str, Any]) -> dict[str, Any]:
    data = validate(payload, PRODUCT_SPEC)
    _check_category(session, data["category_id"])
    if session.scalar(select(Product.id).where(Product.sku == data["sku"])) is not None:
        raise _duplicate_sku(data["sku"])
    now = utcnow()
    product = Product(
        sku=data["sku"],
        slug=f"pending-{uuid.uuid4().hex}",  # the id is needed; replaced before commit
        name=data["name"],
        description=data.get("description", ""),
        category_id=data["category_id"],
        price_amount=cents_to_amount(data["price"]["cents"]),
        currency=data["price"]["currency"],
        is_listed=data.get("active", True),
        created_at=now,
        updated_at=now,
    )
    try:
        session.add(product)
        session.flush()
        product.slug = product_slug(product.name, product.id)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _duplicate_sku(data["sku"]) from None
    return product_json(product)


def update_product(session: Session, product_id: int, payload: Mapping[str, Any]) -> dict[str, Any]:
    data = validate(payload, PRODUCT_PATCH_SPEC, partial=True, immutable=("sku",))
    product = _product_or_404(session, product_id)  # after validation, as the monolith does
    if "category_id" in data:
        _check_category(session, data["category_id"])
    if "name" in data and data["name"] != product.name:
        product.name = data["name"]
        product.slug = product_slug(product.name, product.id)
    if "description" in data:
        product.description = data["description"]
    if "category_id" in data:
        product.category_id = data["category_id"]
    if "price" in data:
        product.price_amount = cents_to_amount(data["price"]["cents"])
        product.currency = data["price"]["currency"]
    if "active" in data:
        product.is_listed = data["active"]
    product.updated_at = utcnow()
    session.commit()
    return product_json(product)


def delete_product(session: Session, product_id: int) -> None:
    product = _product_or_404(session, product_id)
    if product.is_listed:
        raise conflict(f"product {product_id} is active; deactivate it before deleting")
    session.delete(product)
    session.commit()


def _check_category(session: Session, category_id: int) -> None:
    if not category_exists(session, category_id):
        raise validation_error({"category_id": DOES_NOT_EXIST})


def _duplicate_sku(sku: str) -> ApiError:
    return conflict(f"a product with sku {sku} already exists", fields={"sku": "already exists"})
