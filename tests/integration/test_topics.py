"""Forum groups: each topic is its own conversation (window, history, /reset, KV cache), with the
group's settings unless the topic changes them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakebotapi import FakeBotAPI
from tests.fakeengine import ScriptedEngine

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"
)
MENTION = "@alpaca_test_bot "


def in_topic(fake: FakeBotAPI, forum: dict, thread: int | None) -> list[str]:
    return [m.text for m in fake.bot_messages(forum) if m.thread_id == thread]


async def test_each_topic_is_a_conversation_of_its_own(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    await run_bot(engine)
    forum = fake.group_chat("Forum", forum=True)
    alice = fake.user("Alice", "alice")
    fake.set_admins(forum, [alice["id"]])
    engine.enqueue("Llamas hum.", "Rust is a language.", "They hum to calm the herd.")
    fake.send_text(forum, alice, MENTION + "tell me about llamas", thread_id=10)
    await fake.wait_for(lambda: in_topic(fake, forum, 10) == ["Llamas hum."], timeout=10)
    fake.send_text(forum, alice, MENTION + "tell me about rust", thread_id=20)
    await fake.wait_for(lambda: in_topic(fake, forum, 20) == ["Rust is a language."], timeout=10)
    fake.send_text(forum, alice, MENTION + "why do they hum?", thread_id=10)
    await fake.wait_for(lambda: len(in_topic(fake, forum, 10)) == 2, timeout=10)
    llamas_again = engine.prompts()[2]
    assert "about llamas" in llamas_again and "Llamas hum." in llamas_again
    assert "rust" not in llamas_again.lower()  # the other topic's turns are not in this window
    rust = engine.history[1]
    assert "llamas" not in engine.prompts()[1]
    assert rust.chat_key != engine.history[0].chat_key == engine.history[2].chat_key

    # /reset in a topic resets that topic only.
    fake.send_text(forum, alice, "/reset", thread_id=10)
    await fake.wait_for(lambda: any("fresh conversation" in t for t in in_topic(fake, forum, 10)),
                        timeout=10)
    engine.enqueue("Fresh start.", "Still about rust.")
    fake.send_text(forum, alice, MENTION + "hello again", thread_id=10)
    fake.send_text(forum, alice, MENTION + "and the borrow checker?", thread_id=20)
    await fake.wait_for(lambda: len(engine.history) == 5, timeout=10)
    after_reset, other = sorted(engine.history[3:], key=lambda r: r.chat_key != rust.chat_key)[::-1]
    assert "llamas" not in [t.text for t in after_reset.turns][0]
    assert [t.text for t in other.turns][0] == "tell me about rust"


async def test_topics_inherit_the_groups_settings_unless_they_change_them(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    await run_bot(engine)
    forum = fake.group_chat("Forum", forum=True)
    alice = fake.user("Alice", "alice")
    fake.set_admins(forum, [alice["id"]])
    fake.send_text(forum, alice, "/temp 0.9")  # the General topic: the group itself
    await fake.wait_for(lambda: in_topic(fake, forum, None), timeout=10)
    fake.send_text(forum, alice, "/system You are a pirate.")
    await fake.wait_for(lambda: len(in_topic(fake, forum, None)) == 2, timeout=10)
    fake.send_text(forum, alice, "/temp", thread_id=30)
    await fake.wait_for(lambda: in_topic(fake, forum, 30), timeout=10)
    assert "--temp 0.9" in in_topic(fake, forum, 30)[0]
    fake.send_text(forum, alice, "/temp 0.1", thread_id=30)
    await fake.wait_for(lambda: len(in_topic(fake, forum, 30)) == 2, timeout=10)
    fake.send_text(forum, alice, "/temp")
    await fake.wait_for(lambda: len(in_topic(fake, forum, None)) == 3, timeout=10)
    assert "--temp 0.9" in in_topic(fake, forum, None)[2]  # the group keeps its own
    engine.enqueue("Arr.")
    fake.send_text(forum, alice, MENTION + "hi", thread_id=30)
    await fake.wait_for(lambda: "Arr." in in_topic(fake, forum, 30), timeout=10)
    request = engine.history[-1]
    assert request.sampling.temp == pytest.approx(0.1)
    assert request.system == "You are a pirate."
