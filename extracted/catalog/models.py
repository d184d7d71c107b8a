"""The catalog service's own tables (an evolved schema, see docs/extracted.md).

Compared with the monolith: price is an exact decimal amount (`price_amount`) instead of
integer cents, products carry a unique `slug`, and `active` is called `is_listed`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the catalog service; its metadata is the catalog database only."""


class Category(Base):
    __tablename__ = "catalog_category"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    parent_id: Mapped[int | None] = mapped_column(
        Integer,
        ForeignKey("catalog_category.id", name="fk_catalog_category_parent"),
        nullable=True,
        index=True,
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Product(Base):
    __tablename__ = "catalog_product"
    __table_args__ = (
        UniqueConstraint("sku", name="uq_catalog_product_sku"),
        UniqueConstraint("slug", name="uq_catalog_product_slug"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), nullable=False)
    slug: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    category_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("catalog_category.id", name="fk_catalog_product_category"),
        nullable=False,
        index=True,
    )
    price_amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    is_listed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
