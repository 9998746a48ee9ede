"""the interface's language: a chat's /lang choice, and the language each question was asked in

`chats.language` is the chat's /lang (NULL: auto, each person's Telegram language); a question's
`turns.language` is the language its asker was answered in, so a reply redone after a restart
speaks it too.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("language", sa.String(16), nullable=True))
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("language", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("language")
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("language")
