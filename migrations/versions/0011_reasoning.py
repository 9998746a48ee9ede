"""what a thinking model thought (issue 23)

A chat's `/reasoning` (hide|show|off) and `/reasoning_budget` knobs (NULL: the configured
default), and a reply's `turns.thinking`: what the model thought before its answer, kept apart
from `turns.text` (the answer alone, which later turns and the summary see).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("reasoning", sa.String(16), nullable=True))
        batch.add_column(sa.Column("reasoning_budget", sa.Integer(), nullable=True))
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("thinking", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("thinking")
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("reasoning_budget")
        batch.drop_column("reasoning")
