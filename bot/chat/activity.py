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
    tokens: set[CancelToken] = field(default_factory=set)
    by_turn: dict[int, CancelToken] = field(default_factory=dict)
    """The token of the reply to each question being answered or waiting (its Stop button)."""
    users: int = 0
    """Replies running or waiting, and holders of `stop_and_hold`: at 0 the chat is dropped."""


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
    async def writing(self, chat_id: int, turn_id: int) -> AsyncIterator[CancelToken]:
        """Wait for the chat's earlier replies, then hold the chat while the reply to question
        `turn_id` is written; yields the token that stops it (it counts as waiting, and can be
        stopped, from the moment this is entered)."""
        async with self._using(chat_id) as chat:
            cancel = CancelToken()
            chat.tokens.add(cancel)
            chat.by_turn[turn_id] = cancel
            try:
                async with chat.lock:
                    yield cancel
            finally:
                self.written(chat_id, turn_id, cancel)

    def written(self, chat_id: int, turn_id: int, cancel: CancelToken) -> None:
        """The reply is no longer written (what is left is storing and showing it, which /stop
        cannot stop and which must not make a press of its buttons find the chat busy)."""
        chat = self._chats.get(chat_id)
        if chat is None:
            return
        chat.tokens.discard(cancel)
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

    @asynccontextmanager
    async def stop_and_hold(self, chat_id: int) -> AsyncIterator[None]:
        """Stop the chat's replies and hold the chat: none runs or starts until the block ends."""
        self.stop(chat_id)
        async with self._using(chat_id) as chat, chat.lock:
            yield
