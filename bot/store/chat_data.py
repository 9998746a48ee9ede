"""What the bot stores of a chat, as a whole: counted and deleted for /forget, read for
`alpaca-bot export`, and turns pruned past the retention period. Each function takes the
session it works in and commits nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from bot.store.repository import conversation_order
from bot.store.schema import Base, ChatRow, TurnRow

CHAT_DATA_COLUMNS = ("summary", "summary_upto")
"""Columns of `chats` that hold conversation rather than settings (the running summary of the
turns that left the window, and how far it got): /forget empties them."""


@dataclass(frozen=True)
class StoredChat:
    """How much is stored of one chat's conversation."""

    turns: int
    first: datetime | None
    """When the oldest stored turn was written (None: no turns)."""


async def stored_chat(session: AsyncSession, chat_id: int) -> StoredChat:
    count, first = (await session.execute(
        select(func.count(TurnRow.id), func.min(TurnRow.created_at)).where(TurnRow.chat_id == chat_id)
    )).one()
    return StoredChat(int(count), first)


def _chat_data_tables() -> list[Table]:
    """Tables other than `turns` whose rows belong to a conversation (a foreign key to
    `chats`): all conversation data, since settings live in the chat's own row. `chats` itself
    is not one (a forum topic's row refers to its group's: a conversation of its own)."""
    chats = ChatRow.__table__
    turns = TurnRow.__table__
    return [
        table for table in reversed(Base.metadata.sorted_tables)
        if table is not turns and table is not chats
        and any(fk.column.table is chats for fk in table.foreign_keys)
    ]


async def forget_chat(session: AsyncSession, chat_id: int) -> int:
    """Delete a conversation's turns, its summary and anything else of it (`chat_id`: a chat's
    row, or a forum topic's); the row and its settings stay. Returns the turns deleted."""
    for table in _chat_data_tables():
        columns = [fk.parent for fk in table.foreign_keys if fk.column.table is ChatRow.__table__]
        for column in columns:
            await session.execute(delete(table).where(column == chat_id))
    cleared = {name: None for name in CHAT_DATA_COLUMNS}
    await session.execute(update(ChatRow).where(ChatRow.id == chat_id).values(**cleared))
    # Replies first: they refer to their questions.
    replies = await session.execute(
        delete(TurnRow).where(TurnRow.chat_id == chat_id, TurnRow.reply_to.is_not(None))
    )
    questions = await session.execute(delete(TurnRow).where(TurnRow.chat_id == chat_id))
    return int(replies.rowcount or 0) + int(questions.rowcount or 0)  # type: ignore[attr-defined]


async def prune_turns(session: AsyncSession, *, before: datetime) -> set[int]:
    """Delete the turns written before `before`, except those of a reply in progress: a reply
    being written or not yet delivered, its question, and questions waiting for an answer.
    The summaries of the chats that lost turns go too (they were written from the oldest
    turns). Returns those chats."""
    old = TurnRow.created_at < before
    in_progress_reply = (TurnRow.state == "streaming") | (
        (TurnRow.state == "complete") & TurnRow.delivered.is_(False)
    )
    reply = aliased(TurnRow)
    has_reply = exists().where(reply.reply_to == TurnRow.id)
    replies = TurnRow.role != "user"
    questions = (TurnRow.role == "user") & (TurnRow.state != "pending") & ~has_reply
    chats: set[int] = set()
    for doomed in (old & replies & ~in_progress_reply, old & questions):
        found = await session.execute(select(TurnRow.chat_id).where(doomed).distinct())
        chats.update(int(chat_id) for chat_id in found.scalars())
        await session.execute(delete(TurnRow).where(doomed))
    if chats:
        await session.execute(
            update(ChatRow).where(ChatRow.id.in_(chats)).values(**dict.fromkeys(CHAT_DATA_COLUMNS))
        )
    return chats


async def chat_with_turns(
    session: AsyncSession, chat_id: int
) -> list[tuple[ChatRow, list[TurnRow]]] | None:
    """Every conversation of a Telegram chat with the turns it stores, as each reads: the chat
    itself first, then its forum topics by thread (None: no such chat)."""
    chat = await session.get(ChatRow, chat_id)
    if chat is None or chat.parent_id is not None:
        return None
    topics = (await session.execute(
        select(ChatRow).where(ChatRow.parent_id == chat_id).order_by(ChatRow.thread_id)
    )).scalars()
    found = []
    for conversation in (chat, *topics):
        rows = (await session.execute(
            select(TurnRow).where(TurnRow.chat_id == conversation.id)
        )).scalars()
        found.append((conversation, sorted(rows, key=conversation_order)))
    return found
