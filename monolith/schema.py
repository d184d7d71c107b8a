"""The whole monolith schema: imports every module's models so the metadata is complete.

Used by Alembic (`target_metadata`), the seed loader and tests comparing migrations with the
models; application code never needs it.
"""

from __future__ import annotations

from sqlalchemy import MetaData

from monolith.db import Base


def metadata() -> MetaData:
    """The metadata with every module's tables registered."""
    import monolith.catalog.models  # noqa: F401
    import monolith.customers.models  # noqa: F401
    import monolith.inventory.models  # noqa: F401
    import monolith.orders.models  # noqa: F401

    return Base.metadata
