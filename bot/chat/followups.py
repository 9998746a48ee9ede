"""Writing the last reply again (Regenerate, Continue, /retry): which reply, and whether it may
be, checked against the stored conversation; the conversation does the writing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.conversation import NOT_LAST, Accepted, Conversation, Redo
from bot.chat.sink import STOP_NOTES, shown_text
from bot.errors import UserError
from bot.i18n import N_, _
from bot.store import repository as repo
from bot.store.schema import ChatRow, TurnRow

BUSY = N_("A reply is being written here: wait for it, or stop it first.")
NOTHING_TO_REDO = N_("There is no reply here to write again yet.")
NOTHING_TO_CONTINUE = N_("That reply is complete: only one cut off at the /n limit can go on.")
DEAD = N_("This button no longer works.")
"""The refusals above are in English; `Refused` carries them translated."""


class Refused(UserError):
    """A reply that cannot be written again now (the text in the current language);
    `stale`: its buttons no longer apply."""

    def __init__(self, text: str, *, stale: bool = False) -> None:
        super().__init__(text)
        self.stale = stale


@dataclass(frozen=True)
class RedoPlan:
    """A stored reply to write again, and where it is shown."""

    accepted: Accepted
    redo: Redo
    message_ids: list[int]
    shown: str
    """What its messages show now: the text and its note, as the sink wrote them."""
    asker: int | None
    reply_to: int | None
    """The question's message (Telegram)."""
    thread_id: int | None


@dataclass(frozen=True)
class Question:
    """A question whose reply a button belongs to."""

    turn_id: int
    asker: int | None


class Followups:
    """Finds the reply a button or /retry means and checks that it may be written again."""

    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], conversation: Conversation
    ) -> None:
        self._sessions = sessions
        self._conversation = conversation

    async def question(self, conversation_id: int, question_id: int, message_id: int) -> Question:
        """The question behind a button of message `message_id` (raises Refused if the data
        does not name a question of this conversation whose reply is in that message)."""
        async with self._sessions() as session:
            question, _reply = await self._pressed(session, conversation_id, question_id, message_id)
            return Question(question.id, question.user_id)

    async def for_button(
        self, conversation_id: int, question_id: int, redo: Redo, *, message_id: int
    ) -> RedoPlan:
        """The plan for a Regenerate or Continue press, or Refused with the reason."""
        async with self._sessions() as session:
            question, reply = await self._pressed(session, conversation_id, question_id,
                                                  message_id)
            return await self._plan(session, conversation_id, question, reply, redo)

    async def for_last(self, conversation_id: int, redo: Redo) -> RedoPlan:
        """The plan for /retry: the conversation's last reply."""
        async with self._sessions() as session:
            chat = await session.get(ChatRow, conversation_id)
            rows = await repo.conversation(session, chat) if chat is not None else []
            last = rows[-1] if rows else None
            if last is None or last.role != "assistant" or last.reply_to is None:
                raise Refused(_(NOTHING_TO_REDO))
            question = await session.get(TurnRow, last.reply_to)
            if question is None:
                raise Refused(_(NOTHING_TO_REDO))
            return await self._plan(session, conversation_id, question, last, redo)

    async def _pressed(
        self, session: AsyncSession, conversation_id: int, question_id: int, message_id: int
    ) -> tuple[TurnRow, TurnRow]:
        question = await session.get(TurnRow, question_id)
        if question is None or question.role != "user" or question.chat_id != conversation_id:
            raise Refused(_(DEAD), stale=True)
        reply = await repo.reply_for(session, question.id)
        if reply is None or message_id not in repo.decode_message_ids(reply.message_ids):
            raise Refused(_(DEAD), stale=True)
        return question, reply

    async def _plan(
        self, session: AsyncSession, conversation_id: int, question: TurnRow, reply: TurnRow,
        redo: Redo,
    ) -> RedoPlan:
        chat = await session.get(ChatRow, conversation_id)
        rows = await repo.conversation(session, chat) if chat is not None else []
        if not rows or rows[-1].id != reply.id:
            raise Refused(_(NOT_LAST), stale=True)
        if self._conversation.busy(conversation_id) or reply.state != "complete":
            raise Refused(_(BUSY))
        if redo == "continue" and reply.stop_reason != "length":
            raise Refused(_(NOTHING_TO_CONTINUE))
        shown = shown_text(reply.text, STOP_NOTES.get(reply.stop_reason or ""))
        return RedoPlan(
            accepted=Accepted(conversation_id, question.id), redo=redo,
            message_ids=repo.decode_message_ids(reply.message_ids), shown=shown,
            asker=question.user_id, reply_to=question.message_id, thread_id=question.thread_id,
        )
