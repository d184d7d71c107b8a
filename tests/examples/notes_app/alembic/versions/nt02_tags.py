"""tags and the note_tags association (no primary key)

Revision ID: nt02_tags
Revises: nt01_authors_notes
"""

import sqlalchemy as sa
from alembic import op

revision = "nt02_tags"
down_revision = "nt01_authors_notes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("label", sa.String(40), nullable=False, unique=True),
    )
    op.create_table(
        "note_tags",
        sa.Column("note_id", sa.Integer(), sa.ForeignKey("notes.id"), nullable=False),
        sa.Column("tag_id", sa.Integer(), sa.ForeignKey("tags.id"), nullable=False),
    )
    op.create_index("ix_note_tags_note_id", "note_tags", ["note_id"])


def downgrade() -> None:
    op.drop_index("ix_note_tags_note_id", "note_tags")
    op.drop_table("note_tags")
    op.drop_table("tags")
