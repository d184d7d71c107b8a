"""Customers service: the customers module's public API.

Emails are unique case-insensitively (a unique index on `lower(email)` backs the check, so
concurrent sign-ups with the same address cannot both succeed). Functions flush, never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monolith.customers.models import Customer
from shoplib.errors import ApiError, conflict, not_found
from shoplib.pagination import PageRequest
from shoplib.querying import fetch_page, order_by
from shoplib.timefmt import iso, utcnow

#: Sort names of `GET /customers` and the columns they order by.
CUSTOMER_SORTS: dict[str, Any] = {
    "id": Customer.id,
    "name": Customer.full_name,
    "email": Customer.email,
    "created_at": Customer.created_at,
}


@dataclass(frozen=True)
class CustomerFilter:
    """Filters of `GET /customers`: exact email (case-insensitive), name substring."""

    email: str | None = None
    q: str | None = None


def customer_dict(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "email": customer.email,
        "name": customer.full_name,
        "phone": customer.phone,
        "created_at": iso(customer.created_at),
        "updated_at": iso(customer.updated_at),
    }


def list_customers(
    session: Session, page: PageRequest, filters: CustomerFilter
) -> tuple[list[dict[str, Any]], int]:
    statement = select(Customer)
    if filters.email:
        statement = statement.where(func.lower(Customer.email) == filters.email.lower())
    if filters.q:
        statement = statement.where(
            func.lower(Customer.full_name).contains(filters.q.lower(), autoescape=True)
        )
    ordering = order_by(page, CUSTOMER_SORTS, Customer.id)
    rows, total = fetch_page(session, statement, page, ordering)
    return [customer_dict(row) for row in rows], total


def _customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id)
    return customer


def get_customer(session: Session, customer_id: int) -> dict[str, Any]:
    return customer_dict(_customer(session, customer_id))


def _email_taken(email: str) -> ApiError:
    return conflict(
        f"a customer with email {email} already exists", fields={"email": "already exists"}
    )


def _check_email_free(session: Session, email: str, except_id: int | None = None) -> None:
    statement = select(Customer.id).where(func.lower(Customer.email) == email.lower())
    if except_id is not None:
        statement = statement.where(Customer.id != except_id)
    if session.scalar(statement) is not None:
        raise _email_taken(email)


def _flush(session: Session, email: str) -> None:
    try:
        session.flush()
    except IntegrityError as error:  # a concurrent request took the email first
        raise _email_taken(email) from error


def create_customer(session: Session, data: dict[str, Any]) -> dict[str, Any]:
    """Create a customer from validated fields; the name is stored stripped."""
    _check_email_free(session, data["email"])
    now = utcnow()
    customer = Customer(
        email=data["email"],
        full_name=data["name"].strip(),
        phone=data.get("phone"),
        created_at=now,
        updated_at=now,
    )
    session.add(customer)
    _flush(session, data["email"])
    return customer_dict(customer)


def update_customer(session: Session, customer_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    customer = _customer(session, customer_id)
    if "email" in changes:
        _check_email_free(session, changes["email"], except_id=customer_id)
        customer.email = changes["email"]
    if "name" in changes:
        customer.full_name = changes["name"].strip()
    if "phone" in changes:
        customer.phone = changes["phone"]
    customer.updated_at = utcnow()
    _flush(session, customer.email)
    return customer_dict(customer)


def delete_customer(session: Session, customer_id: int) -> None:
    """Erase a customer; their orders keep the (now dangling) customer id by design."""
    session.delete(_customer(session, customer_id))
    session.flush()


def customer_exists(session: Session, customer_id: int) -> bool:
    """For other modules (orders): does this customer exist?"""
    return session.scalar(select(Customer.id).where(Customer.id == customer_id)) is not None
