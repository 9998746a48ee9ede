"""what a question brings along (issue 22: replies and quotes, images, documents and their passages)

`turns.context` holds a question's context as JSON (the message it replies to or the part
quoted, a forward's origin, the text read from an image, the document it is about);
`documents` the files sent to a conversation, read into `passages` (the bytes are not kept).
Both go with their chat (ON DELETE CASCADE, as /forget and the retention period delete).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("context", sa.Text()))
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("chat_id", sa.BigInteger(),
                  sa.ForeignKey("chats.id", ondelete="CASCADE", name="fk_documents_chat_id"),
                  nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("pages", sa.Integer()),
        sa.Column("words", sa.Integer(), nullable=False),
        sa.Column("chars", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("message_id", sa.BigInteger()),
        sa.Column("user_id", sa.BigInteger()),
        sa.Column("speaker", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_documents_chat_id", "documents", ["chat_id"])
    op.create_table(
        "passages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.Integer(),
                  sa.ForeignKey("documents.id", ondelete="CASCADE",
                                name="fk_passages_document_id"),
                  nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer()),
        sa.Column("first_line", sa.Integer(), nullable=False),
        sa.Column("last_line", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_passages_document_id_seq", "passages", ["document_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_passages_document_id_seq", table_name="passages")
    op.drop_table("passages")
    op.drop_index("ix_documents_chat_id", table_name="documents")
    op.drop_table("documents")
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("context")
