"""The one declarative base shared by every module's models, and small shared limits.

Each bounded context declares its own tables on this base; sharing the base (and so the
metadata) is what lets one Alembic environment and `create_all` see the whole schema.
No module may reference another module's tables through it.
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shoplib.routing import MAX_INT  # the one int4 bound, shared with routing and the services

__all__ = ["MAX_INT", "Base"]


class Base(DeclarativeBase):
    """Declarative base for all monolith models."""
