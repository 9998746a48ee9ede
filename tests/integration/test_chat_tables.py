"""What the chat layer keeps in memory by chat stays bounded however many chats the bot has
seen: the replies' table holds only chats with a reply running or waiting, /forget's table
only recent requests, the caches of /lang and of learnt facts only the chats seen last."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.chat.forgetting import CONFIRM_SECONDS, ChatForgetting
from bot.chat.languages import ChatLanguages
from bot.chat.remembered import Remembered
from bot.core.chats import ChatRef
from bot.ops.runtime import open_runtime
from tests.fakeengine import ScriptedEngine
from tests.sinks import RecordingSink, ask

pytestmark = pytest.mark.timeout(120)


async def test_the_replies_table_forgets_a_chat_once_nothing_of_it_runs(make_settings: Any) -> None:
    engine = ScriptedEngine(delay=0.01)
    async with open_runtime(make_settings(), engine=engine) as runtime:
        service = runtime.service
        await asyncio.gather(*(ask(service, ChatRef(1000 + i, "private"), "hi")
                               for i in range(60)))
        assert service.activity.tracked() == 0
        engine.hang = True
        engine.started.clear()
        ref = ChatRef(7, "private")
        writing = asyncio.create_task(ask(service, ref, "go on", RecordingSink()))
        await engine.started.wait()
        assert service.activity.tracked() == 1 and service.activity.busy(7)
        assert service.activity.stop(7) == 1
        await writing
        assert service.activity.tracked() == 0
        async with service.activity.stop_and_hold(8):
            assert service.activity.tracked() == 1
        assert service.activity.tracked() == 0


async def test_forget_keeps_only_recent_requests(make_settings: Any) -> None:
    async with open_runtime(make_settings(), engine=ScriptedEngine()) as runtime:
        service = runtime.service
        now = [1000.0]
        forgetting = ChatForgetting(sessions=runtime.sessions, model=service.running_model,
                                    conversation=service.conversation,
                                    activity=service.activity, clock=lambda: now[0])
        for i in range(50):
            await forgetting.request(ChatRef(2000 + i, "private"), "")
        assert forgetting.waiting == 50
        now[0] += 2 * CONFIRM_SECONDS + 1
        await forgetting.request(ChatRef(3000, "private"), "")
        assert forgetting.waiting == 1


async def test_the_language_and_fact_caches_keep_the_chats_seen_last(make_settings: Any) -> None:
    async with open_runtime(make_settings(), engine=ScriptedEngine()) as runtime:
        languages = ChatLanguages(sessions=runtime.sessions, most=5)
        remembered = Remembered(sessions=runtime.sessions, most=5)
        await languages.change(ChatRef(1, "private"), "zh")
        for i in range(40):
            assert await languages.chosen(ChatRef(100 + i, "private")) is None
            assert not await remembered.holds("no_drafts", 100 + i)
        assert len(languages._chosen) == 5 and len(remembered._known) == 5
        # A chat read again after it was forgotten reads the same from the store.
        assert await languages.chosen(ChatRef(1, "private")) == "zh"
        await remembered.learn("no_drafts", 100)
        for i in range(10):
            await remembered.holds("no_drafts", 200 + i)
        assert await remembered.holds("no_drafts", 100)
