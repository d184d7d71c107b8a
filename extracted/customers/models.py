"""The customers service's own table (an evolved schema, see docs/extracted.md).

Compared with the monolith: the name is stored as `given_name` + `family_name` (split on the
first space; joining them back gives the original name exactly), and the e-mail address is
kept as given plus a lower-cased `email_normalized` that carries the uniqueness rule.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the customers service; its metadata is the customers database only."""


class Customer(Base):
    __tablename__ = "customer"
    __table_args__ = (UniqueConstraint("email_normalized", name="uq_customer_email_normalized"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    email_normalized: Mapped[str] = mapped_column(String(254), nullable=False)
    given_name: Mapped[str] = mapped_column(String(200), nullable=False)
    family_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
