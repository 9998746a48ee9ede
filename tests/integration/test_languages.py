"""The interface in the user's language through the fake Bot API: Telegram's `language_code`
chooses, `/lang` overrides it per chat and survives a restart, each person in a group is
answered in their own language, the command menu exists in each language, and the console
follows --lang."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from bot.console import run_console
from bot.i18n import _, speaking
from bot.ops.runtime import open_runtime
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

HAN = re.compile(r"[\u4e00-\u9fff]")
ASK_USAGE = "Usage: /ask TEXT — ask me a question."


def chinese(text: str) -> bool:
    return bool(HAN.search(text))


def zh(message: str) -> str:
    with speaking("zh"):
        return _(message)


async def answer_to(fake: FakeBotAPI, chat: dict, user: dict, text: str) -> str:
    before = len(texts(fake, chat))
    fake.send_text(chat, user, text)
    await fake.wait_for(lambda: len(texts(fake, chat)) > before, timeout=10)
    return texts(fake, chat)[-1]


async def test_telegram_language_code_chooses_the_language(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    await run_bot(engine)
    li = fake.user("Li", "li", language_code="zh-hans")
    chat = fake.private_chat(li)
    shown = await answer_to(fake, chat, li, "/help")
    assert chinese(shown) and "/temp" in shown and "/lang" in shown
    assert "I answer with a local language model" not in shown
    usage = await answer_to(fake, chat, li, "/ask")
    assert usage == zh(ASK_USAGE) and chinese(usage) and "/ask" in usage
    refused = await answer_to(fake, chat, li, "/temp hot")
    assert chinese(refused) and "hot" in refused
    assert chinese(await answer_to(fake, chat, li, "/nonsense"))

    ann = fake.user("Ann", "ann", language_code="en")
    other = fake.private_chat(ann)
    shown = await answer_to(fake, other, ann, "/help")
    assert shown.startswith("I answer with a local language model") and not chinese(shown)
    assert await answer_to(fake, other, ann, "/ask") == ASK_USAGE
    assert not chinese(await answer_to(fake, other, ann, "/temp hot"))


async def test_in_a_group_each_person_is_answered_in_their_own_language(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    await run_bot(engine)
    group = fake.group_chat("Mixed")
    li = fake.user("Li", "li", language_code="zh-cn")
    ann = fake.user("Ann", "ann", language_code="en-US")
    fake.set_admins(group, [ann["id"]])
    assert await answer_to(fake, group, li, "/ask") == zh(ASK_USAGE)
    assert await answer_to(fake, group, ann, "/ask") == ASK_USAGE
    # Li is no admin: refused, in Chinese; Ann sets Chinese for everyone.
    refused = await answer_to(fake, group, li, "/lang en")
    assert refused == zh("Only the group's admins can change the language.")
    assert chinese(await answer_to(fake, group, ann, "/lang zh"))
    assert await answer_to(fake, group, ann, "/ask") == zh(ASK_USAGE)
    # Replies of the model are not translated: they are the model's.
    engine.enqueue("Hello there.")
    assert await answer_to(fake, group, ann, "@alpaca_test_bot hi") == "Hello there."


async def test_lang_overrides_and_survives_a_restart(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    runner = await run_bot(engine)
    ann = fake.user("Ann", "ann", language_code="en")
    chat = fake.private_chat(ann)
    assert chinese(await answer_to(fake, chat, ann, "/lang zh"))
    shown = await answer_to(fake, chat, ann, "/lang")
    assert chinese(shown) and "简体中文" in shown
    await runner.stop()

    await run_bot(ScriptedEngine())
    assert chinese(await answer_to(fake, chat, ann, "/help"))
    back = await answer_to(fake, chat, ann, "/lang auto")
    assert not chinese(back) and "auto" in back  # answered in Ann's own language at once
    assert (await answer_to(fake, chat, ann, "/help")).startswith("I answer with")
    assert "not-a-language" in await answer_to(fake, chat, ann, "/lang not-a-language")


async def test_a_stopped_reply_is_noted_in_the_askers_language(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    engine = ScriptedEngine(delay=0.05)
    await run_bot(engine, stream_mode="edit")
    li = fake.user("Li", "li", language_code="zh")
    chat = fake.private_chat(li)
    engine.hang = True
    engine.enqueue("one two three")
    fake.send_text(chat, li, "count")
    await fake.wait_for(lambda: any("one" in t for t in texts(fake, chat)), timeout=10)
    fake.send_text(chat, li, "/stop")
    note = zh("⏹ stopped")
    assert chinese(note)
    await fake.wait_for(lambda: any(t.endswith(note) for t in texts(fake, chat)), timeout=10)


async def test_the_command_menu_exists_in_each_language(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    await run_bot(engine)
    english, chinese_menu = fake.commands(), fake.commands("zh")
    assert [name for name, _text in english] == [name for name, _text in chinese_menu]
    assert "lang" in dict(english)
    assert all(not chinese(text) for _name, text in english)
    assert all(chinese(text) for _name, text in chinese_menu)
    assert all(1 <= len(text) <= 256 for _name, text in chinese_menu)


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_the_console_speaks_its_language(make_settings: Any, language: str) -> None:
    out = io.StringIO()
    async with open_runtime(make_settings(), engine=ScriptedEngine()) as runtime:
        await run_console(runtime.service, stdin=io.StringIO("/ask\n/quit\n"), out=out,
                          language=language)
    shown = out.getvalue()
    assert chinese(shown) == (language == "zh")
    assert "/help" in shown
