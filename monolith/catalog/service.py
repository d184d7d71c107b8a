"""Catalog service: the catalog's public API (categories, products) for views and other modules.

Plain functions taking a Session and returning dicts or small dataclasses. Other modules use
`product_exists`, `products_by_ids` and `category_names`; they never touch catalog tables.
Functions flush but never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monolith.catalog.models import Category, Product
from shoplib.errors import conflict, not_found, validation_error
from shoplib.money import money
from shoplib.pagination import PageRequest
from shoplib.querying import fetch_page, order_by
from shoplib.timefmt import iso, utcnow

#: Sort names of the list endpoints and the columns they order by (views and OpenAPI read the names).
CATEGORY_SORTS: dict[str, Any] = {"id": Category.id, "name": Category.name}
PRODUCT_SORTS: dict[str, Any] = {
    "id": Product.id,
    "name": Product.name,
    "price": Product.price_cents,
    "created_at": Product.created_at,
}
DOES_NOT_EXIST = "does not exist"


@dataclass(frozen=True)
class ProductFilter:
    """Filters of `GET /products`; None means "not filtered"."""

    category_id: int | None = None
    active: bool | None = None
    min_price: int | None = None
    max_price: int | None = None
    q: str | None = None


@dataclass(frozen=True)
class ProductInfo:
    """What other modules may know about a product (pricing, naming, grouping)."""

    id: int
    name: str
    category_id: int
    price_cents: int
    currency: str
    active: bool


def category_dict(category: Category) -> dict[str, Any]:
    return {
        "id": category.id,
        "name": category.name,
        "parent_id": category.parent_id,
        "created_at": iso(category.created_at),
    }


def product_dict(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "category_id": product.category_id,
        "price": money(product.price_cents, product.currency),
        "active": product.active,
        "created_at": iso(product.created_at),
        "updated_at": iso(product.updated_at),
    }


# --- categories -------------------------------------------------------------------------------


def list_categories(
    session: Session, page: PageRequest, parent_id: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    statement = select(Category)
    if parent_id is not None:
        statement = statement.where(Category.parent_id == parent_id)
    ordering = order_by(page, CATEGORY_SORTS, Category.id)
    rows, total = fetch_page(session, statement, page, ordering)
    return [category_dict(row) for row in rows], total


def get_category(session: Session, category_id: int) -> dict[str, Any]:
    category = session.get(Category, category_id)
    if category is None:
        raise not_found("category", category_id)
    return category_dict(category)


def create_category(session: Session, name: str, parent_id: int | None = None) -> dict[str, Any]:
    if parent_id is not None and session.get(Category, parent_id) is None:
        raise validation_error({"parent_id": DOES_NOT_EXIST})
    category = Category(name=name, parent_id=parent_id, created_at=utcnow())
    session.add(category)
    session.flush()
    return category_dict(category)


def category_names(session: Session, category_ids: Iterable[int]) -> dict[int, str]:
    """Names of the given categories (missing ids are simply absent)."""
    ids = sorted(set(category_ids))
    names: dict[int, str] = {}
    for chunk in _chunks(ids):
        for row in session.execute(
            select(Category.id, Category.name).where(Category.id.in_(chunk))
        ):
            names[row.id] = row.name
    return names


# --- products ---------------------------------------------------------------------------------


def list_products(
    session: Session, page: PageRequest, filters: ProductFilter
) -> tuple[list[dict[str, Any]], int]:
    statement = select(Product)
    if filters.category_id is not None:
        statement = statement.where(Product.category_id == filters.category_id)
    if filters.active is not None:
        statement = statement.where(Product.active.is_(filters.active))
    if filters.min_price is not None:
        statement = statement.where(Product.price_cents >= filters.min_price)
    if filters.max_price is not None:
        statement = statement.where(Product.price_cents <= filters.max_price)
    if filters.q:
        statement = statement.where(
            func.lower(Product.name).contains(filters.q.lower(), autoescape=True)
        )
    rows, total = fetch_page(session, statement, page, order_by(page, PRODUCT_SORTS, Product.id))
    return [product_dict(row) for row in rows], total


def _product(session: Session, product_id: int) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise not_found("product", product_id)
    return product


def get_product(session: Session, product_id: int) -> dict[str, Any]:
    return product_dict(_product(session, product_id))


def _check_category(session: Session, category_id: int) -> None:
    if session.get(Category, category_id) is None:
        raise validation_error({"category_id": DOES_NOT_EXIST})


def _sku_taken(sku: str) -> Exception:
    return conflict(f"a product with sku {sku} already exists", fields={"sku": "already exists"})


def create_product(session: Session, data: dict[str, Any]) -> dict[str, Any]:
    """Create a product from validated fields (sku, name, category_id, price, ...)."""
    _check_category(session, data["category_id"])
    if session.scalar(select(Product.id).where(Product.sku == data["sku"])) is not None:
        raise _sku_taken(data["sku"])
    now = utcnow()
    product = Product(
        sku=data["sku"],
        name=data["name"],
        description=data.get("description", ""),
        category_id=data["category_id"],
        price_cents=data["price"]["cents"],
        currency=data["price"]["currency"],
        active=data.get("active", True),
        created_at=now,
        updated_at=now,
    )
    session.add(product)
    try:
        session.flush()
    except IntegrityError as error:  # a concurrent insert won the race for the sku
        raise _sku_taken(data["sku"]) from error
    return product_dict(product)


def update_product(session: Session, product_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply validated changes to name, description, category_id, price, active."""
    product = _product(session, product_id)
    if "category_id" in changes:
        _check_category(session, changes["category_id"])
    for name in ("name", "description", "category_id", "active"):
        if name in changes:
            setattr(product, name, changes[name])
    if "price" in changes:
        product.price_cents = changes["price"]["cents"]
        product.currency = changes["price"]["currency"]
    product.updated_at = utcnow()
    session.flush()
    return product_dict(product)


def delete_product(session: Session, product_id: int) -> None:
    """Delete an inactive product; active products must be deactivated first (409)."""
    product = _product(session, product_id)
    if product.active:
        raise conflict(f"product {product_id} is active; deactivate it before deleting")
    session.delete(product)
    session.flush()


# --- for other modules --------------------------------------------------------------------------


def product_exists(session: Session, product_id: int) -> bool:
    return session.scalar(select(Product.id).where(Product.id == product_id)) is not None


def products_by_ids(session: Session, product_ids: Iterable[int]) -> dict[int, ProductInfo]:
    """Pricing and naming of the given products; ids that do not exist are absent."""
    ids = sorted(set(product_ids))
    found: dict[int, ProductInfo] = {}
    for chunk in _chunks(ids):
        statement = select(
            Product.id,
            Product.name,
            Product.category_id,
            Product.price_cents,
            Product.currency,
            Product.active,
        ).where(Product.id.in_(chunk))
        for row in session.execute(statement):
            found[row.id] = ProductInfo(
                row.id, row.name, row.category_id, row.price_cents, row.currency, row.active
            )
    return found


def _chunks(ids: list[int], size: int = 500) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
