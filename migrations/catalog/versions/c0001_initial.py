"""catalog service: initial schema (catalog_category, catalog_product).

Revision ID: c0001_initial
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_category",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column(
            "parent_id",
            sa.Integer(),
            sa.ForeignKey("catalog_category.id", name="fk_catalog_category_parent"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_catalog_category_parent_id", "catalog_category", ["parent_id"])
    op.create_table(
        "catalog_product",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column(
            "category_id",
            sa.Integer(),
            sa.ForeignKey("catalog_category.id", name="fk_catalog_product_category"),
            nullable=False,
        ),
        sa.Column("price_amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("is_listed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("sku", name="uq_catalog_product_sku"),
        sa.UniqueConstraint("slug", name="uq_catalog_product_slug"),
    )
    op.create_index("ix_catalog_product_category_id", "catalog_product", ["category_id"])


def downgrade() -> None:
    op.drop_index("ix_catalog_product_category_id", table_name="catalog_product")
    op.drop_table("catalog_product")
    op.drop_index("ix_catalog_category_parent_id", table_name="catalog_category")
    op.drop_table("catalog_category")
