"""Recovery after a crash or restart: questions never answered, replies never delivered.

A question is answered again at most MAX_REDOS times: one whose answer takes the process down
(a native abort, memory running out) would otherwise crash every start, forever. Past that it
is marked failed, and its chat and the bot's admins are told."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.conversation import Accepted
from bot.chat.sink import ReplySink, actions_after, stop_note
from bot.i18n import SOURCE
from bot.store import repository as repo
from bot.store.schema import ChatRow, TurnRow

MAX_REDOS = 2
"""Starts that may answer an unanswered question again (after its first try)."""


@dataclass(frozen=True)
class RecoveryItem:
    """Work a crash interrupted: a question to answer again, or a reply to deliver."""

    question: TurnRow
    reply: TurnRow | None
    chat_kind: str
    telegram_chat_id: int
    """Where the reply goes (a forum topic's conversation is in its group)."""
    language: str = SOURCE
    """The language the question was asked in (its asker is answered in it); English for a
    question stored without one."""

    @property
    def needs_generation(self) -> bool:
        return self.question.state == "pending"

    @property
    def given_up(self) -> bool:
        """Answering it failed too often (see MAX_REDOS): it is failed, not answered again."""
        return self.question.state == "failed"

    @property
    def accepted(self) -> Accepted:
        return Accepted(self.question.chat_id, self.question.id, self.question.user_id)

    @property
    def message_ids(self) -> list[int]:
        """The messages the interrupted reply already shows (edited in place, not resent)."""
        return repo.decode_message_ids(self.reply.message_ids if self.reply else None)


class Recovery:
    """Finds interrupted work and delivers replies stored before a crash."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def unfinished(self) -> list[RecoveryItem]:
        """Questions never answered and replies never delivered, oldest first."""
        items: list[RecoveryItem] = []
        async with self._sessions() as session:
            for question in await repo.unfinished_questions(session):
                question.redone += 1
                if question.redone > MAX_REDOS:
                    question.state = "failed"
                reply = await repo.reply_for(session, question.id)
                items.append(_item(question, reply, *await _where(session, question.chat_id)))
            await session.commit()  # counted before the answer begins: it may crash again
            for reply in await repo.undelivered_replies(session):
                asked = await session.get(TurnRow, reply.reply_to) if reply.reply_to else None
                if asked is not None:
                    items.append(_item(asked, reply, *await _where(session, reply.chat_id)))
        return items

    async def deliver_stored(self, item: RecoveryItem, sink: ReplySink) -> None:
        """Finish delivering a reply that was stored complete before a crash (its note in the
        current language: the caller speaks `item.language`)."""
        assert item.reply is not None
        reason = item.reply.stop_reason or ""
        ids = await sink.finish(item.reply.text, stop_note(reason),
                                actions=actions_after(item.reply.text, reason))
        async with self._sessions() as session:
            await repo.set_reply_messages(session, item.reply.id, ids, delivered=True)
            await session.commit()


async def _where(session: AsyncSession, chat_id: int) -> tuple[str, int]:
    """The chat's kind and its Telegram id."""
    chat = await session.get(ChatRow, chat_id)
    return (chat.kind, chat.telegram_id) if chat else ("private", chat_id)


def _item(question: TurnRow, reply: TurnRow | None, kind: str, telegram_id: int) -> RecoveryItem:
    return RecoveryItem(question, reply, kind, telegram_id, question.language or SOURCE)
