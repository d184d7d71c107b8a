"""Tables as plain `Table` objects and classes mapped imperatively (no declarative base)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, Integer, MetaData, String, Table, Text
from sqlalchemy.orm import registry, relationship

metadata = MetaData()

authors = Table(
    "authors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(80), nullable=False),
)
tokens = Table(
    "tokens",
    metadata,
    Column("token", String(64), primary_key=True),
    Column("author_id", Integer, ForeignKey("authors.id"), nullable=False),
)
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("author_id", Integer, ForeignKey("authors.id"), nullable=False),
    Column("title", String(200), nullable=False),
    Column("body", Text, nullable=False, default=""),
    Column("created_at", DateTime, nullable=False),
)
tags = Table(
    "tags",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("label", String(40), nullable=False, unique=True),
)
# an association table without a primary key (the app keeps pairs unique itself)
note_tags = Table(
    "note_tags",
    metadata,
    Column("note_id", Integer, ForeignKey("notes.id"), nullable=False, index=True),
    Column("tag_id", Integer, ForeignKey("tags.id"), nullable=False),
)


@dataclass(eq=False)
class Author:
    name: str
    id: int | None = None


@dataclass(eq=False)
class Token:
    token: str
    author_id: int


@dataclass(eq=False)
class Tag:
    label: str
    id: int | None = None


@dataclass(eq=False)
class Note:
    author_id: int
    title: str
    body: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now().replace(microsecond=0))
    id: int | None = None
    tags: list[Tag] = field(default_factory=list)


def map_models() -> registry:
    """Map the classes onto the tables (once per process)."""
    reg = registry(metadata=metadata)
    if getattr(Note, "__mapper__", None) is None:
        reg.map_imperatively(Author, authors)
        reg.map_imperatively(Token, tokens)
        reg.map_imperatively(Tag, tags)
        reg.map_imperatively(
            Note,
            notes,
            properties={"tags": relationship(Tag, secondary=note_tags, order_by=tags.c.label)},
        )
    return reg
