"""Updates of one chat are handled in the order they arrived; different chats run concurrently,
and one chat never holds more than one of the bot's places to run a handler.

python-telegram-bot takes a place (its semaphore) for an update before the processor sees it.
Had that place been the bound, updates waiting for their chat's turn would hold places: one
chat sending a burst would fill them all and every other chat would wait behind it. So PTB's
bound is set out of reach, and the processor keeps its own: an update first waits for its
chat's turn, holding nothing, and only then for one of `max_concurrent_updates` places. A chat
runs one handler at a time, so it holds at most one place whatever it sends.

Handlers are short (a reply is produced in a background task, a command's answer goes out
through the chat's outbox), so keeping a chat's updates in order costs nothing and means
`/system X` followed by a question answers with X.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

log = logging.getLogger(__name__)

UNBOUNDED = 1 << 30
"""PTB's own bound: never reached, so an update waiting for its chat holds no place."""
MAX_WAITING_PER_CHAT = 1000
"""Updates of one chat waiting for their turn beyond this are dropped (with a warning): a
chat cannot make the bot hold an unbounded backlog of its updates."""


class ChatOrderedUpdateProcessor(BaseUpdateProcessor):
    """At most `max_concurrent_updates` handlers at once, one at a time per chat."""

    def __init__(self, max_concurrent_updates: int = 64) -> None:
        super().__init__(UNBOUNDED)
        self._places = asyncio.BoundedSemaphore(max_concurrent_updates)
        self._turns: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            async with self._places:
                await coroutine
            return
        waiting = self._waiting.get(chat.id, 0)
        if waiting >= MAX_WAITING_PER_CHAT:
            log.warning("chat %s has %d updates waiting: dropping one", chat.id, waiting)
            _discard(coroutine)
            return
        turn = self._turns.setdefault(chat.id, asyncio.Lock())
        self._waiting[chat.id] = waiting + 1
        try:
            # The chat's turn first (FIFO: asyncio.Lock wakes its waiters in order), holding
            # no place; then a place, held only while the handler runs.
            async with turn, self._places:
                await coroutine
        finally:
            self._waiting[chat.id] -= 1
            if not self._waiting[chat.id]:
                # Forget idle chats so the tables do not grow with every chat ever seen.
                del self._waiting[chat.id]
                self._turns.pop(chat.id, None)

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def _discard(coroutine: Awaitable[Any]) -> None:
    """Drop an update's handling unrun (closing it, so Python does not warn it was never
    awaited)."""
    close = getattr(coroutine, "close", None)
    if close is not None:
        close()
