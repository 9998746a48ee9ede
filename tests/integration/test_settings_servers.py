"""/settings' lines for the bot's admins only: under model servers, the servers' lines (and
nobody ever sees a password written into a server's URL, nor does /model, nor the admins'
alerts); with speculative decoding, how the pool's drafts stand (issue 24)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.chat.servers import server_status_text
from bot.chat.switching import served_listing
from bot.engine.base import MemoryReport, ServerStatus
from bot.engine.drafting import DraftStats
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

URL = "http://alpaca:s3cret-pw@10.0.0.5:8080"


class ServedEngine(ScriptedEngine):
    """A scripted engine that reports model servers, as the remote engine does."""

    def memory_report(self) -> MemoryReport:
        return MemoryReport(kv_type="none", kv_bytes_allocated=0, kv_bytes_used=0, slots=(),
                            servers=(f"{URL} up, 2 slots", "http://10.0.0.6:8080 down: refused"))

    def served_models(self) -> list[tuple[str, bool, list[str]]]:
        return [(URL, True, ["demo"])]

    def add_listener(self, listener: Any) -> None:
        return None


class DraftingEngine(ScriptedEngine):
    """A scripted engine that drafts, as the pool does with `draft = "ngram"`."""

    def __init__(self, stats: DraftStats) -> None:
        super().__init__()
        self.stats = stats

    def draft_stats(self) -> DraftStats | None:
        return self.stats


async def settings_of_others(fake: FakeBotAPI) -> list[str]:
    """/settings as a group's member and as its admin (not the bot's admins) see it."""
    group = fake.group_chat("Llamas")
    alice, olga = fake.user("Alice"), fake.user("Olga")
    fake.set_admins(group, [olga["id"]])
    for count, person in enumerate((alice, olga), 1):
        fake.send_text(group, person, "/settings")
        await fake.wait_for(lambda n=count: len(texts(fake, group)) == n, timeout=10)
    return texts(fake, group)


async def test_only_bot_admins_see_the_servers_and_nobody_their_passwords(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    boss = fake.user("Boss")
    await run_bot(ServedEngine(), admins=[boss["id"]])
    for shown in await settings_of_others(fake):
        assert "10.0.0" not in shown and "s3cret" not in shown
        assert "Memory: held by the model servers (2); the bot's admins see them here." in shown
    boss_chat = fake.private_chat(boss)
    fake.send_text(boss_chat, boss, "/settings")
    await fake.wait_for(lambda: texts(fake, boss_chat), timeout=10)
    [shown] = texts(fake, boss_chat)
    assert "10.0.0.5:8080" in shown and "10.0.0.6:8080 down" in shown
    assert "s3cret" not in shown and "alpaca:***@10.0.0.5" in shown
    fake.send_text(boss_chat, boss, "/model")
    await fake.wait_for(lambda: len(texts(fake, boss_chat)) == 2, timeout=10)
    assert "10.0.0.5" in texts(fake, boss_chat)[1] and "s3cret" not in texts(fake, boss_chat)[1]


def test_the_admins_alerts_and_the_model_list_hide_passwords() -> None:
    down = ServerStatus(url=URL, up=False, reason=f"cannot reach {URL}/health", servers_up=0,
                        servers=1)
    for text in (server_status_text(down), served_listing(ServedEngine())):  # type: ignore[arg-type]
        assert "10.0.0.5:8080" in text and "s3cret" not in text


async def test_only_bot_admins_see_the_drafts_acceptance_rate(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    boss = fake.user("Boss")
    engine = DraftingEngine(DraftStats("ngram", drafted=120, accepted=90))
    await run_bot(engine, admins=[boss["id"]])
    for shown in await settings_of_others(fake):
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
