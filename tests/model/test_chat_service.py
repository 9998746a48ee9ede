"""The chat service on the real demo model: windows, /reset, persistence."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.ops.runtime import open_runtime
from bot.store.repository import ChatRef
from tests.sinks import RecordingSink, ask

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]


def context_used(settings_text: str) -> int:
    match = re.search(r"Context: (\d+)/(\d+) tokens", settings_text)
    assert match, settings_text
    return int(match.group(1))



async def test_reset_really_empties_the_window(make_settings, chat_engine: Any) -> None:
    settings = make_settings(seed=11, n_predict=24)
    async with open_runtime(settings, engine=chat_engine) as runtime:
        service = runtime.service
        chat, fresh = ChatRef(1, "private"), ChatRef(2, "private")
        for text in ("My name is Ada and I like chess.", "What game do I like?"):
            outcome = await ask(service, chat, text)
            assert outcome is not None
        grown = outcome.window_tokens
        used_before = context_used(await service.overview.text(chat))
        assert used_before > grown  # the window now holds the last reply too
        await service.chat_settings.reset(chat)
        assert context_used(await service.overview.text(chat)) < 40  # the system prompt only
        after_reset = await ask(service, chat, "Hello!")
        in_new_chat = await ask(service, fresh, "Hello!")
        assert after_reset is not None and in_new_chat is not None
        assert after_reset.window_tokens == in_new_chat.window_tokens < grown
        assert not after_reset.left_out


async def test_window_slides_when_the_context_is_small(make_settings, chat_engine: Any) -> None:
    settings = make_settings(seed=5, ctx=256, n_predict=32)
    async with open_runtime(settings, engine=chat_engine) as runtime:
        service = runtime.service
        chat = ChatRef(3, "private")
        left_out = []
        for i in range(6):  # the fifth and the sixth leave turns out (each turn ~46 tokens)
            sink = RecordingSink()
            text = f"Message number {i}: tell me one fact about the sea."
            outcome = await ask(service, chat, text, sink)
            assert outcome is not None
            assert outcome.window_tokens <= 256 - 32
            assert sink.final is not None and "\ufffd" not in sink.final
            left_out.append(outcome.left_out)
        assert left_out[-1], "old turns must leave a window of 224 tokens"
        shown = await service.overview.text(chat)
        assert "/ctx (-c) = 256" in shown and "/256 tokens" in shown
