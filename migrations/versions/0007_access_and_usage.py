"""who may use the bot, the requests of those who may not yet, and each person's daily use

`access` holds what was decided about a user or a group (allowed or denied); `access_requests`
what is kept of someone not allowed (30 days); `usage` the questions, tokens and refusals of a
person in a chat on a UTC day. An upgrade locks no one out: every chat already in the database,
and every person who asked something in one, is allowed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

GROUP_KINDS = ("group", "supergroup", "channel")


def upgrade() -> None:
    access = op.create_table(
        "access",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(256)),
        sa.Column("decided_by", sa.BigInteger()),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "access_requests",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(256)),
        sa.Column("username", sa.String(64)),
        sa.Column("language", sa.String(16)),
        sa.Column("preview", sa.Text()),
        sa.Column("added_by", sa.BigInteger()),
        sa.Column("added_by_name", sa.String(256)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "usage",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("chat_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("questions", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
    )
    op.create_index("ix_usage_user_day", "usage", ["user_id", "day"])
    op.bulk_insert(access, _already_here())


def _already_here() -> list[dict[str, object]]:
    """Every chat of the database (topics are their group's) and every person who asked
    something: allowed, decided by nobody (the upgrade)."""
    bind = op.get_bind()
    now = datetime.now(UTC)
    rows: dict[int, dict[str, object]] = {}
    chats = bind.execute(sa.text(
        "select id, kind, title from chats where parent_id is null and kind != 'console'"
    ))
    for chat_id, kind, title in chats:
        rows[chat_id] = {
            "id": chat_id, "kind": "chat" if kind in GROUP_KINDS else "user", "allowed": True,
            "name": title, "decided_by": None, "decided_at": now,
        }
    people = bind.execute(sa.text(
        "select user_id, max(speaker) from turns where user_id is not null group by user_id"
    ))
    for user_id, speaker in people:
        rows.setdefault(user_id, {
            "id": user_id, "kind": "user", "allowed": True, "name": speaker,
            "decided_by": None, "decided_at": now,
        })
    return list(rows.values())


def downgrade() -> None:
    op.drop_index("ix_usage_user_day", table_name="usage")
    op.drop_table("usage")
    op.drop_table("access_requests")
    op.drop_table("access")
