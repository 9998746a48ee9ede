"""/forget and retention drop every cache an engine keeps of a chat: its replies' and its
summary's (a request of its own, `summary:<id>`, whose saved state holds the summary's text)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bot.chat.forgetting import drop_cached
from bot.core.chats import cache_keys, summary_key


class ForgettingEngine:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    async def forget(self, chat_key: str) -> None:
        self.forgotten.append(chat_key)


class Model:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Any]:
        yield self.engine


async def test_a_chat_is_forgotten_under_each_of_its_cache_keys() -> None:
    engine = ForgettingEngine()
    assert await drop_cached(Model(engine), 42)  # type: ignore[arg-type]
    assert engine.forgotten == ["42", summary_key(42)] == list(cache_keys(42))
