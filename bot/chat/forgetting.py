"""/forget: delete what the bot stores of a chat's conversation, after a confirmation; and the
model's cache of chats, dropped with their turns (by /forget and by the retention period)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.activity import ChatActivity
from bot.chat.conversation import Conversation
from bot.chat.running import RunningModel
from bot.core.chats import ChatRef, cache_keys
from bot.i18n import _, _n
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
    """Have the running engine drop what it keeps of the chat (under each of its `cache_keys`:
    the replies' cache and the summary's); False if it failed (logged)."""
    async with model.serving() as engine:
        if not isinstance(engine, ForgetsChats):
            return True
        try:
            for key in cache_keys(chat_id):
                await engine.forget(key)
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
        activity: ChatActivity,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions, self._model, self._clock = sessions, model, clock
        self._conversation, self._activity = conversation, activity
        self._asked: dict[int, float] = {}
        """Chats asked to confirm, and until when the confirmation counts."""

    async def request(self, ref: ChatRef, argument: str) -> str:
        """The answer to `/forget ARGUMENT`."""
        word = argument.strip().lower()
        if word not in ("", CONFIRM_WORD):
            return _("Usage: /forget, then /forget {word} to confirm.", word=CONFIRM_WORD)
        conversation = await self._conversation.conversation_id(ref)
        until = self._asked.pop(conversation, None)
        now = self._clock()
        # Confirmations that can no longer come in time go, once a late one is no longer
        # worth telling apart ("came too late") from a first /forget.
        self._asked = {chat: end for chat, end in self._asked.items()
                       if now <= end + CONFIRM_SECONDS}
        if word == CONFIRM_WORD and until is not None and now <= until:
            return await self.forget(ref, conversation)
        async with self._sessions() as session:
            stored = await chat_data.stored_chat(session, conversation)
        self._asked[conversation] = now + CONFIRM_SECONDS
        late = _("That confirmation came too late. ") if word and until is not None else ""
        return late + _what_goes(ref, stored.turns, stored.first)

    @property
    def waiting(self) -> int:
        """How many chats were asked to confirm lately (the table /forget keeps)."""
        return len(self._asked)

    async def forget(self, ref: ChatRef, conversation: int) -> str:
        """Stop the conversation's replies, delete it and the model's cache of it."""
        async with self._activity.stop_and_hold(conversation):
            async with self._sessions() as session:
                deleted = await chat_data.forget_chat(session, conversation)
                await session.commit()
            dropped = await drop_cached(self._model, conversation)
        log.info("conversation %d of chat %d forgotten: %d turns deleted", conversation,
                 ref.chat_id, deleted)
        topic = ref.thread_id is not None
        if topic:
            text = _n("Forgotten: {n} message and the model's saved context of this topic. "
                      "Settings stay (/settings).",
                      "Forgotten: {n} messages and the model's saved context of this topic. "
                      "Settings stay (/settings).", deleted)
        else:
            text = _n("Forgotten: {n} message and the model's saved context of this chat. "
                      "Settings stay (/settings).",
                      "Forgotten: {n} messages and the model's saved context of this chat. "
                      "Settings stay (/settings).", deleted)
        if not dropped:
            text += "\n" + (
                _("⚠️ The model's cache of this topic could not be dropped; the error was logged.")
                if topic else
                _("⚠️ The model's cache of this chat could not be dropped; the error was logged.")
            )
        return text


def _what_goes(ref: ChatRef, turns: int, first: datetime | None) -> str:
    """What `/forget yes` would delete, and how to confirm it (a whole message for each of
    chat or topic, with or without the date of the first message)."""
    values = {"word": CONFIRM_WORD, "minutes": f"{CONFIRM_SECONDS / 60:.0f}"}
    if first is None:
        if ref.thread_id is not None:
            return _n(
                "This deletes the conversation I store of this topic: {n} message, its summary, "
                "and the model's saved context of it. Settings and the system prompt stay.\n"
                "Send /forget {word} within {minutes} minutes to confirm.",
                "This deletes the conversation I store of this topic: {n} messages, its summary, "
                "and the model's saved context of it. Settings and the system prompt stay.\n"
                "Send /forget {word} within {minutes} minutes to confirm.", turns, **values)
        return _n(
            "This deletes the conversation I store of this chat: {n} message, its summary, "
            "and the model's saved context of it. Settings and the system prompt stay.\n"
            "Send /forget {word} within {minutes} minutes to confirm.",
            "This deletes the conversation I store of this chat: {n} messages, its summary, "
            "and the model's saved context of it. Settings and the system prompt stay.\n"
            "Send /forget {word} within {minutes} minutes to confirm.", turns, **values)
    date = f"{first:%Y-%m-%d}"
    if ref.thread_id is not None:
        return _n(
            "This deletes the conversation I store of this topic: {n} message since {date}, its "
            "summary, and the model's saved context of it. Settings and the system prompt "
            "stay.\nSend /forget {word} within {minutes} minutes to confirm.",
            "This deletes the conversation I store of this topic: {n} messages since {date}, its "
            "summary, and the model's saved context of it. Settings and the system prompt "
            "stay.\nSend /forget {word} within {minutes} minutes to confirm.",
            turns, date=date, **values)
    return _n(
        "This deletes the conversation I store of this chat: {n} message since {date}, its "
        "summary, and the model's saved context of it. Settings and the system prompt "
        "stay.\nSend /forget {word} within {minutes} minutes to confirm.",
        "This deletes the conversation I store of this chat: {n} messages since {date}, its "
        "summary, and the model's saved context of it. Settings and the system prompt "
        "stay.\nSend /forget {word} within {minutes} minutes to confirm.",
        turns, date=date, **values)
