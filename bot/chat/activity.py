"""The replies each chat is writing or waiting to write: one at a time per chat, in the order
asked, each with the token that stops it (/stop, its Stop button, /forget). A chat is kept here
only while something of it runs, waits or holds it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from bot.engine.base import CancelToken


@dataclass
class _Chat:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tokens: dict[CancelToken, int | None] = field(default_factory=dict)
    """The token of every reply running or waiting, and who asked for it."""
    by_turn: dict[int, CancelToken] = field(default_factory=dict)
    """The token of the reply to each question being answered or waiting (its Stop button)."""
    users: int = 0
    """Replies running or waiting, and holders of `stop_and_hold`: at 0 the chat is dropped."""


async def _lock_unless_cancelled(lock: asyncio.Lock, cancel: CancelToken) -> bool:
    """Acquire `lock`, unless `cancel` is cancelled first; whether it was acquired."""
    if cancel.cancelled:
        return False
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def settle() -> None:
        if not stopped.done():
            stopped.set_result(None)

    def wake() -> None:  # from any thread
        loop.call_soon_threadsafe(settle)

    cancel.on_cancel(wake)
    acquiring = asyncio.ensure_future(lock.acquire())
    try:
        await asyncio.wait({acquiring, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the waiting task itself was cancelled: nothing may stay held
        if acquiring.done() and not acquiring.cancelled():
            lock.release()
        acquiring.cancel()
        raise
    finally:
        stopped.cancel()
    if not acquiring.done():
        acquiring.cancel()
        return False
    if cancel.cancelled:  # both at once: the lock is not kept for a reply that will not run
        lock.release()
        return False
    return True


class ChatActivity:
    """Which replies each chat is writing, and the tokens that stop them."""

    def __init__(self) -> None:
        self._chats: dict[int, _Chat] = {}

    def tracked(self) -> int:
        """How many chats have a reply running or waiting, or are held."""
        return len(self._chats)

    @asynccontextmanager
    async def _using(self, chat_id: int) -> AsyncIterator[_Chat]:
        """The chat's entry, made if needed, dropped when its last user is done."""
        chat = self._chats.setdefault(chat_id, _Chat())
        chat.users += 1
        try:
            yield chat
        finally:
            chat.users -= 1
            if not chat.users and self._chats.get(chat_id) is chat:
                del self._chats[chat_id]

    @asynccontextmanager
    async def writing(
        self, chat_id: int, turn_id: int, asker: int | None = None, *, early_stop: bool = False
    ) -> AsyncIterator[CancelToken]:
        """Wait for the chat's earlier replies, then hold the chat while the reply to question
        `turn_id` (asked by user `asker`) is written; yields the token that stops it (it counts
        as waiting, and can be stopped, from the moment this is entered).

        `early_stop`: stopped while it waits (its asker's /stop, while someone else's reply
        runs), it is yielded at once, cancelled, without holding the chat."""
        async with self._using(chat_id) as chat:
            cancel = CancelToken()
            chat.tokens[cancel] = asker
            chat.by_turn[turn_id] = cancel
            try:
                if early_stop and not await _lock_unless_cancelled(chat.lock, cancel):
                    yield cancel
                    return
                if not early_stop:
                    await chat.lock.acquire()
                try:
                    yield cancel
                finally:
                    chat.lock.release()
            finally:
                self.written(chat_id, turn_id, cancel)

    def written(self, chat_id: int, turn_id: int, cancel: CancelToken) -> None:
        """The reply is no longer written (what is left is storing and showing it, which /stop
        cannot stop and which must not make a press of its buttons find the chat busy)."""
        chat = self._chats.get(chat_id)
        if chat is None:
            return
        chat.tokens.pop(cancel, None)
        if chat.by_turn.get(turn_id) is cancel:
            del chat.by_turn[turn_id]

    def stop_turn(self, chat_id: int, turn_id: int) -> bool:
        """Cancel the reply to one question (its Stop button); False if none is in progress."""
        chat = self._chats.get(chat_id)
        token = chat.by_turn.get(turn_id) if chat is not None else None
        if token is None or token.cancelled:
            return False
        token.cancel()
        return True

    def busy(self, chat_id: int) -> bool:
        """Whether a reply of this chat is being written or waits to be."""
        chat = self._chats.get(chat_id)
        return chat is not None and bool(chat.tokens)

    def stop(self, chat_id: int) -> int:
        """Cancel the running and waiting replies of a chat; returns how many."""
        chat = self._chats.get(chat_id)
        tokens = list(chat.tokens) if chat is not None else []
        for token in tokens:
            token.cancel()
        return len(tokens)

    def stop_asked_by(self, chat_id: int, user_id: int | None) -> int:
        """Cancel the running and waiting replies of a chat that `user_id` asked for (none
        for an unknown sender); returns how many."""
        chat = self._chats.get(chat_id)
        if chat is None or user_id is None:
            return 0
        tokens = [token for token, asker in chat.tokens.items() if asker == user_id]
        for token in tokens:
            token.cancel()
        return len(tokens)

    @asynccontextmanager
    async def stop_and_hold(self, chat_id: int) -> AsyncIterator[None]:
        """Stop the chat's replies and hold the chat: none runs or starts until the block ends."""
        self.stop(chat_id)
        async with self._using(chat_id) as chat, chat.lock:
            yield
