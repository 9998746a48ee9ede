"""/settings and speculative decoding: the bot's admins see how the pool's drafts stand (issue
24), in their language; a chat's members, group admins included, do not."""

from __future__ import annotations

from typing import Any

import pytest

from bot.engine.drafting import DraftStats
from tests.fakebotapi import FakeBotAPI
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


class DraftingEngine(ScriptedEngine):
    """A scripted engine that drafts, as the pool does with `draft = "ngram"`."""

    def __init__(self, stats: DraftStats) -> None:
        super().__init__()
        self.stats = stats

    def draft_stats(self) -> DraftStats | None:
        return self.stats


def texts(fake: FakeBotAPI, chat: dict) -> list[str]:
    return [message.text for message in fake.bot_messages(chat)]


async def test_only_the_bot_s_admins_see_the_acceptance_rate(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    boss = fake.user("Boss")
    engine = DraftingEngine(DraftStats("ngram", drafted=120, accepted=90))
    await run_bot(engine, admins=[boss["id"]])
    group = fake.group_chat("Llamas")
    alice, olga = fake.user("Alice"), fake.user("Olga")
    fake.set_admins(group, [olga["id"]])
    for count, person in enumerate((alice, olga), 1):  # a member, a group admin: not the bot's
        fake.send_text(group, person, "/settings")
        await fake.wait_for(lambda n=count: len(texts(fake, group)) == n, timeout=10)
        shown = texts(fake, group)[-1]
        assert "Model: scripted" in shown and "Drafting" not in shown and "90" not in shown
    boss_chat = fake.private_chat(boss)
    fake.send_text(boss_chat, boss, "/settings")
    await fake.wait_for(lambda: texts(fake, boss_chat), timeout=10)
    assert "Drafting (ngram): 90 of 120 drafted tokens accepted (75%)" in texts(fake, boss_chat)[0]

    engine.stats = DraftStats("ngram", drafted=0, accepted=0)
    fake.send_text(boss_chat, boss, "/lang zh")
    fake.send_text(boss_chat, boss, "/settings")
    await fake.wait_for(lambda: len(texts(fake, boss_chat)) == 3, timeout=10)
    shown = texts(fake, boss_chat)[2]
    assert "草稿预测（ngram）：尚未预测任何 token" in shown and "Drafting" not in shown
