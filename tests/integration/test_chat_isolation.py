"""One chat cannot stall the others: a group member's burst of 100 commands, with Telegram's 20
messages a minute in that group enforced by the fake Bot API, leaves another chat's question
answered at once, and the group gets every answer in bounded form (a few messages, none sent
during a flood ban)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fakebotapi import GROUP_MESSAGES_PER_MINUTE, FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

BURST = 100


async def test_a_burst_of_commands_in_a_group_does_not_stall_another_chat(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:  # type: ignore[no-untyped-def]
    await run_bot(engine)
    group = fake.group_chat("Busy group")
    member, alice = fake.user("Flo", "flo"), fake.user("Alice", "alice")
    private = fake.private_chat(alice)
    started = time.monotonic()
    commands = [fake.send_text(group, member, "/help" if i % 2 else "/settings")
                for i in range(BURST)]
    await fake.wait_for(lambda: fake.bot_messages(group), timeout=10, what="a first answer")
    await asyncio.sleep(2)  # the group's answers under way, its minute filling up

    engine.enqueue("Hi Alice.")
    asked = time.monotonic()
    fake.send_text(private, alice, "Hello?")
    await fake.wait_for(lambda: texts(fake, private) == ["Hi Alice."], timeout=30,
                        what="the private chat's reply")
    assert time.monotonic() - asked < 1.0

    # The group's answers: every command answered (the last message quotes the last command),
    # in a few messages that merge what piled up, within Telegram's limit, never during a ban.
    last = commands[-1]["message_id"]
    await fake.wait_for(lambda: fake.bot_messages(group)[-1].reply_to_message_id == last,
                        timeout=70, what="the answer to the last command")
    posted = fake.bot_messages(group)
    # Merged: far fewer messages than commands. Within Telegram's limit: the fake refuses a
    # 21st message in a minute (a 429, and violations() below would list any call during the
    # ban); on a loaded machine the answers may spill into a second minute.
    minutes = 1 + int((time.monotonic() - started) // 60)
    assert len(posted) <= min(GROUP_MESSAGES_PER_MINUTE * minutes, BURST // 2)
    assert "/settings" in posted[-1].text and "Model: scripted" in posted[-1].text
    assert fake.violations() == []
