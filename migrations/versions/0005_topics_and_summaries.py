"""forum topics as conversations of their own; a running summary per conversation

A topic of a forum group is a row of `chats` with `parent_id` (the group's row) and `thread_id`;
its knobs and system prompt left NULL follow the group's. `summary` holds what the model wrote of
the turns up to `summary_upto` that left the window; `summary_on` NULL means on.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("parent_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("thread_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("summary", sa.Text(), nullable=True))
        batch.add_column(sa.Column("summary_upto", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("summary_on", sa.Boolean(), nullable=True))
        batch.create_foreign_key("fk_chats_parent_id", "chats", ["parent_id"], ["id"],
                                 ondelete="CASCADE")
        batch.create_unique_constraint("uq_chats_parent_thread", ["parent_id", "thread_id"])


def downgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.drop_constraint("uq_chats_parent_thread", type_="unique")
        batch.drop_constraint("fk_chats_parent_id", type_="foreignkey")
        for column in ("summary_on", "summary_upto", "summary", "thread_id", "parent_id"):
            batch.drop_column(column)
