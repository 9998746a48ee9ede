"""what a question heard (issue 21: voice notes, audio, video notes)

A question heard rather than typed keeps its transcript as its text, like any question, and
says so: `turns.heard_from` is what it was heard from ("voice", "audio", "video_note", or "file"
for the console's /listen), `turns.heard_seconds` how long that audio was. The audio itself is
not kept.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("heard_from", sa.String(16), nullable=True))
        batch.add_column(sa.Column("heard_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("heard_seconds")
        batch.drop_column("heard_from")
