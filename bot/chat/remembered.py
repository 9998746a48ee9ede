"""Facts a front end learns about a chat and keeps across restarts (Telegram refused live drafts
there, say), in the store's key-value state table; read once, then from memory."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.recent import MOST_CHATS, RecentChats
from bot.store import repository as repo


class Remembered:
    """Per-chat yes/no facts: `holds` is false until `learn` was called, in this run or one
    before (the store is asked once, then only for chats not asked about lately)."""

    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], most: int = MOST_CHATS
    ) -> None:
        self._sessions = sessions
        self._known: RecentChats[str, bool] = RecentChats(most)
        """The facts of the chats asked about last; an older one is read again."""

    @staticmethod
    def _key(fact: str, chat_id: int) -> str:
        return f"{fact}:{chat_id}"

    async def holds(self, fact: str, chat_id: int) -> bool:
        key = self._key(fact, chat_id)
        if key not in self._known:
            async with self._sessions() as session:
                self._known[key] = await repo.get_state(session, key) is not None
        return self._known[key]

    async def learn(self, fact: str, chat_id: int) -> None:
        key = self._key(fact, chat_id)
        self._known[key] = True
        async with self._sessions() as session:
            await repo.set_state(session, key, "1")
            await session.commit()
