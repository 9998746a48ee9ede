"""chats and turns

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chats",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("title", sa.String(256)),
        sa.Column("temp", sa.Float()),
        sa.Column("top_k", sa.Integer()),
        sa.Column("top_p", sa.Float()),
        sa.Column("repeat_penalty", sa.Float()),
        sa.Column("n_predict", sa.Integer()),
        sa.Column("n_ctx", sa.Integer()),
        sa.Column("system_prompt", sa.Text()),
        sa.Column("window_start", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "turns",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "chat_id", sa.BigInteger(), sa.ForeignKey("chats.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("speaker", sa.String(128)),
        sa.Column("user_id", sa.BigInteger()),
        sa.Column("reply_to", sa.Integer(), sa.ForeignKey("turns.id")),
        sa.Column("message_id", sa.BigInteger()),
        sa.Column("message_ids", sa.Text()),
        sa.Column("thread_id", sa.BigInteger()),
        sa.Column("delivered", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("stop_reason", sa.String(16)),
        sa.Column("n_tokens", sa.Integer()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_turns_chat_id_id", "turns", ["chat_id", "id"])
    op.create_index("ix_turns_state", "turns", ["state"])


def downgrade() -> None:
    op.drop_index("ix_turns_state", table_name="turns")
    op.drop_index("ix_turns_chat_id_id", table_name="turns")
    op.drop_table("turns")
    op.drop_table("chats")
