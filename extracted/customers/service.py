"""Customer domain rules: validation, lookups, writes, and the name/e-mail conversions.

The HTTP contract speaks one `name`; this service stores `given_name` and `family_name`,
split on the first space, so that joining them back with one space gives the stored name
exactly. E-mail uniqueness is case-insensitive through the `email_normalized` column.
Sorting and filtering by name work on the joined name, so results come in the same order as
the monolith's `full_name`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from extracted.customers.models import Customer
from shoplib.errors import ApiError, conflict, not_found
from shoplib.pagination import QueryArgs, page_envelope
from shoplib.querying import fetch_page, order_by
from shoplib.timefmt import iso, utcnow
from shoplib.validation import Field, length, stripped_length, validate


def _email_check(value: str) -> str | None:
    local, at, domain = value.partition("@")
    if not at or not local or not domain or "@" in domain:
        return "must be an email address with exactly one @"
    return None


CUSTOMER_SPEC: dict[str, Field] = {
    "email": Field("string", required=True, checks=(length(3, 254), _email_check)),
    "name": Field("string", required=True, checks=(stripped_length(1, 200),)),
    "phone": Field("string", nullable=True, checks=(length(0, 32),)),
}

# The joined name, computed in SQL so sorting and filtering match the monolith's `full_name`.
FULL_NAME: ColumnElement[str] = case(
    (Customer.family_name.is_(None), Customer.given_name),
    else_=Customer.given_name + " " + Customer.family_name,
)

CUSTOMER_SORTS: dict[str, ColumnElement[Any]] = {
    "id": Customer.id.expression,
    "name": FULL_NAME,
    "email": Customer.email.expression,
    "created_at": Customer.created_at.expression,
}


# --------------------------------------------------------------------------------------------
# conversions at the edge


def split_name(name: str) -> tuple[str, str | None]:
    """`"Mary Ann Smith"` → `("Mary", "Ann Smith")`; `"Cher"` → `("Cher", None)`."""
    given, _, family = name.partition(" ")
    return (given, family) if _ else (given, None)


def join_name(given_name: str, family_name: str | None) -> str:
    """Inverse of `split_name`: the original name, exactly."""
    return given_name if family_name is None else f"{given_name} {family_name}"


def normalize_email(email: str) -> str:
    """The case-insensitive identity of an address (same rule as the mapping's `lower`)."""
    return email.lower()


# --------------------------------------------------------------------------------------------
# serialisation


def customer_json(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "email": customer.email,
        "name": join_name(customer.given_name, customer.family_name),
        "phone": customer.phone,
        "created_at": iso(customer.created_at),
        "updated_at": iso(customer.updated_at),
    }


# --------------------------------------------------------------------------------------------
# lookups


def _customer_or_404(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id)
    return customer


def get_customer(session: Session, customer_id: int) -> dict[str, Any]:
    return customer_json(_customer_or_404(session, customer_id))


def list_customers(session: Session, args: Mapping[str, str], path: str) -> dict[str, Any]:
    query = QueryArgs(args)
    page = query.page(tuple(CUSTOMER_SORTS))
    email = query.text("email", max_length=254)
    text = query.text("q")
    query.finish()
    conditions: list[ColumnElement[bool]] = []
    if email:
        conditions.append(Customer.email_normalized == normalize_email(email))
    if text:
        conditions.append(func.lower(FULL_NAME).contains(text.lower(), autoescape=True))
    ordering = order_by(page, CUSTOMER_SORTS, Customer.id)
    rows, total = fetch_page(session, select(Customer).where(*conditions), page, ordering)
    return page_envelope([customer_json(c) for c in rows], total, page, path, args)


# --------------------------------------------------------------------------------------------
# writes


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    """The name is stored with surrounding whitespace stripped (as the monolith stores it)."""
    if "name" in data:
        data["name"] = data["name"].strip()
    return data


def _check_email_free(session: Session, email: str, own_id: int | None = None) -> None:
    existing = session.scalar(
        select(Customer.id).where(Customer.email_normalized == normalize_email(email))
    )
    if existing is not None and existing != own_id:
        raise _duplicate_email(email)


def create_customer(session: Session, payload: Mapping[str, Any]) -> dict[str, Any]:
    data = _clean(validate(payload, CUSTOMER_SPEC))
    _check_email_free(session, data["email"])
    given, family = split_name(data["name"])
    now = utcnow()
    customer = Customer(
        email=data["email"],
        email_normalized=normalize_email(data["email"]),
        given_name=given,
        family_name=family,
        phone=data.get("phone"),
        created_at=now,
        updated_at=now,
    )
    session.add(customer)
    _commit(session, data["email"])
    return customer_json(customer)


def update_customer(
    session: Session, customer_id: int, payload: Mapping[str, Any]
) -> dict[str, Any]:
    data = _clean(validate(payload, CUSTOMER_SPEC, partial=True))
    customer = _customer_or_404(session, customer_id)  # after validation, as the monolith does
    if "email" in data:
        _check_email_free(session, data["email"], own_id=customer.id)
        customer.email = data["email"]
        customer.email_normalized = normalize_email(data["email"])
    if "name" in data:
        customer.given_name, customer.family_name = split_name(data["name"])
    if "phone" in data:
        customer.phone = data["phone"]
    customer.updated_at = utcnow()
    _commit(session, customer.email)
    return customer_json(customer)


def delete_customer(session: Session, customer_id: int) -> None:
    session.delete(_customer_or_404(session, customer_id))
    session.commit()


def _commit(session: Session, email: str) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _duplicate_email(email) from None


def _duplicate_email(email: str) -> ApiError:
    return conflict(
        f"a customer with email {email} already exists", fields={"email": "already exists"}
    )
