"""Memory past the window on the real demo model: a conversation longer than the context gets a
summary within its bound, and no prompt ever overflows the window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.core.prompt import Segment
from bot.engine.base import Finished, GenerationEvent, GenerationRequest
from bot.ops.runtime import open_runtime
from bot.store.repository import ChatRef
from bot.store.schema import ChatRow
from tests.sinks import ask

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]


class Recording:
    """The engine under test, noting each prompt's tokens and each reply's end."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.prompts: list[tuple[str, int, int]] = []
        self.endings: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def count_tokens(self, prompt: Any) -> int:
        return int(await self._engine.count_tokens(prompt))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        used = await self._engine.count_tokens(request.prompt)
        self.prompts.append((request.chat_key, used, request.sampling.n_predict))
        async for event in self._engine.generate(request):
            if isinstance(event, Finished):
                self.endings.append(event.reason)
            yield event


# Slow by nature: seven turns answered and folded into summaries by the real model in a 256-token
# window.
async def test_a_long_conversation_gets_a_bounded_summary_and_never_overflows(
    make_settings: Any, pool_engine: Any
) -> None:
    engine = Recording(pool_engine)
    settings = make_settings(seed=5, ctx=256, n_predict=40, temp=0.0, summary_tokens=48)
    facts = ["My name is Ada.", "I keep three llamas called Tom, Ben and Sue.",
             "Tom is the oldest llama and likes carrots.", "Ben is shy and sleeps a lot.",
             "Sue guards the sheep at night.", "We live near a big lake in the hills.",
             "What do you remember about my llamas?"]
    async with open_runtime(settings, engine=engine) as runtime:  # type: ignore[arg-type]
        service = runtime.service
        chat = ChatRef(9, "private")
        for text in facts:
            outcome = await ask(service, chat, text)
            assert outcome is not None
        await asyncio.wait_for(service.summaries.until_written(1), timeout=240)
        async with runtime.sessions() as session:
            row = await session.get(ChatRow, 9)
            assert row is not None and row.summary
        assert await engine.count_tokens((Segment(row.summary, False),)) <= 48
        outcome = await ask(service, chat, "Who am I?")
        assert outcome is not None
    replies = [(used, n) for key, used, n in engine.prompts if not key.startswith("summary:")]
    assert replies and all(used + n <= 256 for used, n in replies), replies
    assert "context" not in engine.endings
