"""The documents of conversations and their passages: stored when read, listed, drawn on by
questions until /reset (`repository.reset_conversation` puts them aside), and pruned past the
retention period (/forget deletes them with the rest of a conversation, `bot.store.chat_data`). Each function takes the session it works in
and commits nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.reading.document import ExtractedDocument
from bot.reading.passages import Passage
from bot.store.schema import DocumentRow, PassageRow


async def add_document(
    session: AsyncSession, chat_id: int, name: str, document: ExtractedDocument,
    passages: Sequence[Passage], *, message_id: int | None = None, user_id: int | None = None,
    speaker: str | None = None,
) -> DocumentRow:
    """Store a document read into `passages`, current in the conversation `chat_id`."""
    row = DocumentRow(
        chat_id=chat_id, current=True, name=name, kind=document.kind, unit=document.unit,
        pages=document.pages, words=document.words, chars=document.chars,
        truncated=document.truncated, message_id=message_id, user_id=user_id, speaker=speaker,
    )
    session.add(row)
    await session.flush()
    session.add_all(
        PassageRow(document_id=row.id, seq=p.seq, page=p.page, first_line=p.first,
                   last_line=p.last, text=p.text)
        for p in passages
    )
    await session.flush()
    return row


async def current_documents(session: AsyncSession, chat_id: int) -> list[DocumentRow]:
    """The documents questions in the conversation draw on (since its last /reset), oldest
    first."""
    rows = await session.execute(
        select(DocumentRow).where(DocumentRow.chat_id == chat_id, DocumentRow.current.is_(True))
        .order_by(DocumentRow.id)
    )
    return list(rows.scalars())


async def passages_of(session: AsyncSession, document_ids: Sequence[int]) -> list[PassageRow]:
    """The passages of these documents, each document's in order."""
    if not document_ids:
        return []
    rows = await session.execute(
        select(PassageRow).where(PassageRow.document_id.in_(document_ids))
        .order_by(PassageRow.document_id, PassageRow.seq)
    )
    return list(rows.scalars())


async def document_by_message(
    session: AsyncSession, chat_id: int, message_id: int
) -> DocumentRow | None:
    """The document the Telegram message `message_id` brought to the conversation."""
    rows = await session.execute(
        select(DocumentRow).where(DocumentRow.chat_id == chat_id,
                                  DocumentRow.message_id == message_id)
        .order_by(DocumentRow.id.desc())
    )
    return rows.scalars().first()


async def prune_documents(session: AsyncSession, *, before: datetime) -> set[int]:
    """Delete the documents (and passages) sent before `before`; returns their chats."""
    old = DocumentRow.created_at < before
    chats = set((await session.execute(select(DocumentRow.chat_id).where(old).distinct()))
                .scalars())
    await session.execute(delete(DocumentRow).where(old))
    return {int(chat_id) for chat_id in chats}
