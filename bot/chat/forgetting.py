"""/forget: delete what the bot stores of a chat's conversation, after a confirmation; and the
model's cache of chats, dropped with their turns (by /forget and by the retention period)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.conversation import Conversation
from bot.chat.running import RunningModel
from bot.core.chats import ChatRef
from bot.store import chat_data

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 120.0
CONFIRM_WORD = "yes"


@runtime_checkable
class ForgetsChats(Protocol):
    """An engine that keeps something of a chat (a KV cache in a slot, a saved state) and can
    drop it; an engine without `forget` keeps nothing between replies."""

    async def forget(self, chat_key: str) -> None: ...


async def drop_cached(model: RunningModel, chat_id: int) -> bool:
    """Have the running engine drop what it keeps of the chat; False if it failed (logged)."""
    async with model.serving() as engine:
        if not isinstance(engine, ForgetsChats):
            return True
        try:
            await engine.forget(str(chat_id))
        except Exception:
            log.exception("could not drop the model's cache of chat %d", chat_id)
            return False
    return True


class ChatForgetting:
    """Asks first, then deletes: `/forget` says what will go, `/forget yes` within
    CONFIRM_SECONDS deletes it."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        model: RunningModel,
        conversation: Conversation,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._model = model
        self._conversation = conversation
        self._clock = clock
        self._asked: dict[int, float] = {}
        """Chats asked to confirm, and until when the confirmation counts."""

    async def request(self, ref: ChatRef, argument: str) -> str:
        """The answer to `/forget ARGUMENT`."""
        word = argument.strip().lower()
        if word not in ("", CONFIRM_WORD):
            return f"Usage: /forget, then /forget {CONFIRM_WORD} to confirm."
        conversation = await self._conversation.conversation_id(ref)
        until = self._asked.pop(conversation, None)
        if word == CONFIRM_WORD and until is not None and self._clock() <= until:
            return await self.forget(ref, conversation)
        async with self._sessions() as session:
            stored = await chat_data.stored_chat(session, conversation)
        self._asked[conversation] = self._clock() + CONFIRM_SECONDS
        since = f" since {stored.first:%Y-%m-%d}" if stored.first is not None else ""
        late = "That confirmation came too late. " if word and until is not None else ""
        return (
            f"{late}This deletes the conversation I store of this {_where(ref)}: {stored.turns} "
            f"{'message' if stored.turns == 1 else 'messages'}{since}, its summary, and the "
            "model's saved context of it. Settings and the system prompt stay.\n"
            f"Send /forget {CONFIRM_WORD} within {CONFIRM_SECONDS / 60:.0f} minutes to confirm."
        )

    async def forget(self, ref: ChatRef, conversation: int) -> str:
        """Stop the conversation's replies, delete it and the model's cache of it."""
        async with self._conversation.quiet(conversation):
            async with self._sessions() as session:
                deleted = await chat_data.forget_chat(session, conversation)
                await session.commit()
            dropped = await drop_cached(self._model, conversation)
        log.info("conversation %d of chat %d forgotten: %d turns deleted", conversation,
                 ref.chat_id, deleted)
        text = (f"Forgotten: {deleted} {'message' if deleted == 1 else 'messages'} and the "
                f"model's saved context of this {_where(ref)}. Settings stay (/settings).")
        if not dropped:
            text += (f"\n⚠️ The model's cache of this {_where(ref)} could not be dropped; the "
                     "error was logged.")
        return text


def _where(ref: ChatRef) -> str:
    return "topic" if ref.thread_id is not None else "chat"
