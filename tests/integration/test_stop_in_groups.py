"""/stop in a group: a member stops their own replies and waiting questions; the group's admins
and the bot's admins stop everyone's."""

from __future__ import annotations

from typing import Any

import pytest

from bot.chat.commands import NOTHING_OF_YOURS
from bot.chat.conversation import STOPPED_EARLY
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


async def test_a_members_stop_stops_only_their_own_replies(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    engine = ScriptedEngine(delay=0.05)
    engine.hang = True
    await run_bot(engine)
    group = fake.group_chat("Llamas")
    alice, bob, carol, olga = (fake.user(name) for name in ("Alice", "Bob", "Carol", "Olga"))
    fake.set_admins(group, [olga["id"]])
    engine.enqueue("alice's answer goes on", "bob's answer")
    fake.send_text(group, alice, "@alpaca_test_bot think")
    await engine.started.wait()
    fake.send_text(group, bob, "@alpaca_test_bot me too")
    fake.send_text(group, carol, "@alpaca_test_bot and me")
    await fake.wait_for(lambda: any("alice's answer goes on" in t for t in texts(fake, group)),
                        timeout=10)
    # Bob stops his own waiting question, not Alice's reply nor Carol's question.
    fake.send_text(group, bob, "/stop")
    await fake.wait_for(lambda: _(STOPPED_EARLY) in texts(fake, group), timeout=10)
    assert engine.running == 1 and len(engine.history) == 1
    assert texts(fake, group).count(_(STOPPED_EARLY)) == 1
    # With nothing of his own left, he hears why nothing stops.
    fake.send_text(group, bob, "/stop")
    await fake.wait_for(lambda: NOTHING_OF_YOURS in texts(fake, group), timeout=10)
    assert engine.running == 1
    # The group's admin stops everyone's: Alice's reply and Carol's question.
    fake.send_text(group, olga, "/stop")
    await fake.wait_for(lambda: texts(fake, group).count(_(STOPPED_EARLY)) == 2
                        and any(t.endswith("⏹ stopped") for t in texts(fake, group)), timeout=10)
    assert len(engine.history) == 1


def _(text: str) -> str:
    return text  # the messages are checked in English
