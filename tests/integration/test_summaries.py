"""Memory past the window with the scripted model: turns that leave the window are summarised
in the background, the summary joins the window, /summary shows and switches it, /reset clears
it, and no reply ever waits for a summary."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bot.chat.summaries import SUMMARY_INTRO
from bot.core.prompt import Segment, prompt_text
from bot.ops.runtime import open_runtime
from bot.store.repository import ChatRef
from bot.store.schema import ChatRow
from tests.fakeengine import ScriptedEngine
from tests.sinks import RecordingSink, ask

pytestmark = pytest.mark.timeout(60)

LONG = "The herd moved north along the river while the shepherds argued about the weather. " * 3


class FirstText(RecordingSink):
    """Notes when the first text of a reply arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.first: float | None = None

    async def update(self, text: str, **details: Any) -> None:
        if self.first is None:
            self.first = time.monotonic()
        await super().update(text, **details)


async def wait_for(predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def stored(runtime: Any, chat_id: int) -> ChatRow:
    async with runtime.sessions() as session:
        row = await session.get(ChatRow, chat_id)
        assert row is not None
        return row


async def test_turns_that_leave_the_window_are_summarised_without_delaying_replies(
    make_settings: Any,
) -> None:
    engine = ScriptedEngine(delay=0.02, default_reply=" ".join(["summary"] * 120))
    settings = make_settings(ctx=256, n_predict=32, summary_tokens=64)
    async with open_runtime(settings, engine=engine) as runtime:
        service = runtime.service
        chat = ChatRef(5, "private")
        for i in range(5):
            engine.enqueue(f"Answer {i}.")
            await ask(service, chat, f"{i}: {LONG}")
        await wait_for(lambda: any(r.chat_key.startswith("summary:") for r in engine.history))
        summary_request = next(r for r in engine.history if r.chat_key.startswith("summary:"))
        assert "Answer 0." in prompt_text(summary_request.prompt)  # the oldest turns are folded
        # A question while the summary is being written: it is answered at once.
        engine.enqueue("Right away.")
        sink = FirstText()
        asked = time.monotonic()
        await ask(service, chat, "quick question", sink)
        assert sink.final == "Right away."
        assert sink.first is not None and sink.first - asked < 0.5
        # The interrupted summary is written again once the bot is idle, and bounded.
        await asyncio.wait_for(service.summaries.until_written(1), timeout=30)
        row = await stored(runtime, 5)
        assert row.summary and row.summary_upto
        assert await engine.count_tokens((Segment(row.summary, False),)) <= 64
        engine.enqueue("With memory.")
        await ask(service, chat, "what happened before?")
        last = engine.history[-1]
        assert last.system is not None and SUMMARY_INTRO in last.system
        assert SUMMARY_INTRO in engine.prompts()[-1]

        # /summary shows it; off keeps it out of the window; /reset clears it.
        assert "summary" in (await service.chat_settings.show_summary(chat)).lower()
        await service.chat_settings.set_summary(chat, "off")
        engine.enqueue("Forgetful.")
        await ask(service, chat, "and now?")
        assert SUMMARY_INTRO not in engine.prompts()[-1]
        await service.chat_settings.set_summary(chat, "on")
        await service.chat_settings.reset(chat)
        assert (await stored(runtime, 5)).summary is None
        assert "No summary yet" in await service.chat_settings.show_summary(chat)


async def test_a_reply_cancels_the_summary_being_written_and_it_is_written_again(
    make_settings: Any,
) -> None:
    summary = " ".join(["summary"] * 40)  # 2 s of writing at 0.05 s a word
    engine = ScriptedEngine(delay=0.05, default_reply=summary)
    settings = make_settings(ctx=256, n_predict=32, summary_tokens=64)
    async with open_runtime(settings, engine=engine) as runtime:
        service = runtime.service
        chat = ChatRef(5, "private")
        for i in range(5):
            engine.enqueue(f"Answer {i}.")
            await ask(service, chat, f"{i}: {LONG}")

        def summary_requests() -> list[Any]:
            return [r for r in engine.history if r.chat_key.startswith("summary:")]

        await wait_for(lambda: len(summary_requests()) == 1 and engine.running == 1)
        [interrupted] = summary_requests()
        # A question in another chat, whose window holds everything: only the interrupted
        # summary itself can bring the first chat's summary back.
        engine.enqueue("Right away.")
        sink = RecordingSink()
        await ask(service, ChatRef(6, "private"), "quick question", sink)
        assert sink.final == "Right away."
        # The reply cancelled the summary: nothing of it was stored.
        assert interrupted.cancel.cancelled
        assert service.summaries.written == 0 and (await stored(runtime, 5)).summary is None
        # Once the bot is idle again it is written from the same turns, to its end.
        await asyncio.wait_for(service.summaries.until_written(1), timeout=30)
        again = summary_requests()[1]
        assert prompt_text(again.prompt) == prompt_text(interrupted.prompt)
        assert not again.cancel.cancelled
        row = await stored(runtime, 5)
        assert row.summary and summary.startswith(row.summary) and row.summary_upto
