"""Flood bans in the log: one warning line per ban (python-telegram-bot's rate limiter logs an
ERROR with a traceback for each by itself), and the ban read through `RetryAfter`'s public API."""

from __future__ import annotations

import datetime as dtm
import logging

import pytest
from telegram.error import RetryAfter

from bot.telegram.ratelimit import retry_seconds
from tests.fakebotapi import FakeBotAPI
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


async def test_each_flood_ban_is_one_warning_without_a_traceback(
    fake: FakeBotAPI, run_bot, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    engine = ScriptedEngine(delay=0.05)
    await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    # Two bans in a row: the reply's first message is refused twice, then delivered.
    fake.fail_next("sendMessage", 429, retry_after=1, times=2, chat_id=chat)
    words = " ".join(f"w{i}" for i in range(60))
    engine.enqueue(words)
    with caplog.at_level(logging.DEBUG):
        fake.send_text(chat, alice, "stream please")
        await fake.wait_for(lambda: [m.text for m in fake.bot_messages(chat)] == [words],
                            timeout=30)
    bans = [r for r in fake.requests() if r.status == 429]
    assert len(bans) == 2
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and "flood control" in r.getMessage()]
    assert [r.getMessage() for r in warnings] == [
        f"flood control: Telegram holds sendMessage to chat {chat['id']} for 1 s",
    ] * 2
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r for r in caplog.records if r.exc_info] == []
    assert fake.violations() == []


def test_retry_after_is_read_as_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert retry_seconds(RetryAfter(33)) == 33.0
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # PTB's coming default: a timedelta
    assert retry_seconds(RetryAfter(dtm.timedelta(seconds=2.5))) == 2.5
