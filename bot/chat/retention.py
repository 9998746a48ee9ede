"""The retention period: turns and documents older than `retention_days` are deleted, at
start and then every hour while the bot runs, with the model's cache of the chats that lost
turns."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.forgetting import drop_cached
from bot.chat.running import RunningModel
from bot.store import chat_data, documents
from bot.store.schema import utcnow

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0
"""Seconds between two passes."""


class Retention:
    """Deletes turns past the retention period (0 days: keeps everything)."""

    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], model: RunningModel, days: int
    ) -> None:
        self._sessions = sessions
        self._model = model
        self.days = days

    async def prune(self) -> set[int]:
        """One pass: delete the turns older than the period; returns the chats that lost some.

        A reply in progress keeps its turns (see `chat_data.prune_turns`)."""
        if self.days <= 0:
            return set()
        before = utcnow() - timedelta(days=self.days)
        async with self._sessions() as session:
            chats = await chat_data.prune_turns(session, before=before)
            chats |= await documents.prune_documents(session, before=before)
            await session.commit()
        for chat_id in sorted(chats):
            # The cache holds the deleted turns' tokens: drop it with them.
            await drop_cached(self._model, chat_id)
        if chats:
            log.info("retention: deleted turns older than %d days in %d chats", self.days,
                     len(chats))
        return chats

    async def prune_logged(self) -> None:
        """`prune`, a failure logged (the next pass tries again)."""
        try:
            await self.prune()
        except Exception:
            log.exception("retention: deleting old turns failed; trying again in %.0f s",
                          PRUNE_EVERY)

    async def run(self, every: float = PRUNE_EVERY) -> None:
        """Prune every `every` seconds until cancelled (the first pass is the caller's, at
        start, before interrupted replies resume)."""
        if self.days <= 0:
            return
        while True:
            await asyncio.sleep(every)
            await self.prune_logged()
