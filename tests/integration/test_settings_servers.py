"""/settings under model servers: only the bot's admins see the servers' lines, and nobody ever
sees a password written into a server's URL (nor does /model, nor the admins' alerts)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.chat.servers import server_status_text
from bot.chat.switching import served_listing
from bot.engine.base import MemoryReport, ServerStatus
from tests.fakebotapi import FakeBotAPI
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


def texts(fake: FakeBotAPI, chat: dict) -> list[str]:
    return [message.text for message in fake.bot_messages(chat)]


async def test_only_bot_admins_see_the_servers_and_nobody_their_passwords(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    boss = fake.user("Boss")
    await run_bot(ServedEngine(), admins=[boss["id"]])
    group = fake.group_chat("Llamas")
    alice, olga = fake.user("Alice"), fake.user("Olga")
    fake.set_admins(group, [olga["id"]])
    for count, person in enumerate((alice, olga), 1):  # a member, a group admin: not the bot's
        fake.send_text(group, person, "/settings")
        await fake.wait_for(lambda n=count: len(texts(fake, group)) == n, timeout=10)
        shown = texts(fake, group)[-1]
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
