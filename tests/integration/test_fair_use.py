"""Fair use through the fake Bot API: the rate limit (only the allowed number answered, one
notice), the daily token budget, the backlog of a forum group counted across its topics, the
refusals in /metrics, /usage and /stats from the database, bot admins exempt."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from bot.store.schema import TurnRow, UsageRow
from tests.fakebotapi import FakeBotAPI
from tests.fakeengine import ScriptedEngine
from tests.integration.test_metrics import free_port, scrape, total

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]
MENTION = "@alpaca_test_bot "


def texts(fake: FakeBotAPI, chat: dict, thread: int | None = None) -> list[str]:
    return [m.text for m in fake.bot_messages(chat) if thread is None or m.thread_id == thread]


async def settle(fake: FakeBotAPI, seconds: float = 0.8) -> None:
    await fake.wait_for(lambda: not fake.pending_updates(), timeout=10, what="updates taken")
    await asyncio.sleep(seconds)


async def stored(runner: Any, table: Any) -> list[Any]:
    from bot.store.database import sessions

    async with sessions(runner.runtime.database)() as session:
        return list((await session.execute(select(table))).scalars())


async def test_the_rate_limit_answers_the_allowed_number_and_one_notice(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    port = free_port()
    boss = fake.user("Boss", "boss")
    runner = await run_bot(engine, user_messages_per_minute=2, chat_waiting_max=0,
                           admins=[boss["id"]], metrics_listen=f"127.0.0.1:{port}")
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    for n in range(5):
        fake.send_text(chat, alice, f"question {n}")
    await fake.wait_for(lambda: len(engine.history) == 2, timeout=10)
    await settle(fake)
    notices = [t for t in texts(fake, chat) if t.startswith("⏳")]
    assert len(notices) == 1 and "2 questions a minute" in notices[0], texts(fake, chat)
    assert "seconds" in notices[0]
    assert len(engine.history) == 2 and len(texts(fake, chat)) == 3
    questions = [t.text for t in await stored(runner, TurnRow) if t.role == "user"]
    assert questions == ["question 0", "question 1"]  # refused ones are not stored
    values = await scrape(f"http://127.0.0.1:{port}")
    assert total(values, "alpaca_bot_messages_refused_total", reason="rate") == 3
    for reason in ("access", "tokens", "backlog", "busy"):
        assert total(values, "alpaca_bot_messages_refused_total", reason=reason) == 0
    # Commands are not questions, and bot admins have no limit.
    fake.send_text(chat, alice, "/usage")
    await fake.wait_for(lambda: texts(fake, chat)[-1].startswith("Your use"), timeout=10)
    usage = texts(fake, chat)[-1]
    assert "Today: 2 questions" in usage and "3 messages were refused" in usage
    assert "questions a minute: 2" in usage
    boss_chat = fake.private_chat(boss)
    for n in range(4):
        fake.send_text(boss_chat, boss, f"boss question {n}")
    await fake.wait_for(lambda: len(engine.history) == 6, timeout=10)
    await settle(fake, 0.3)
    assert not any(t.startswith("⏳") for t in texts(fake, boss_chat))


async def test_the_daily_token_budget(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    runner = await run_bot(engine, user_tokens_per_day=5)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    engine.enqueue("one two three four five six")  # six tokens of the scripted model
    fake.send_text(chat, alice, "count to six")
    await fake.wait_for(lambda: texts(fake, chat) == ["one two three four five six"], timeout=10)
    for _ in range(50):  # the figures are stored with the reply
        rows = await stored(runner, UsageRow)
        if rows and rows[0].tokens:
            break
        await asyncio.sleep(0.05)
    [row] = rows
    assert (row.user_id, row.chat_id, row.questions, row.tokens) == (alice["id"], chat["id"], 1, 6)
    fake.send_text(chat, alice, "and again")
    fake.send_text(chat, alice, "please")
    await settle(fake)
    assert len(engine.history) == 1
    refusals = texts(fake, chat)[1:]
    assert len(refusals) == 1 and "today's 5 tokens" in refusals[0] and "00:00 UTC" in refusals[0]
    fake.send_text(chat, alice, "/usage")
    await fake.wait_for(lambda: texts(fake, chat)[-1].startswith("Your use"), timeout=10)
    assert "Today: 1 question, 6 tokens." in texts(fake, chat)[-1]
    assert "tokens a day: 5" in texts(fake, chat)[-1]


async def test_the_backlog_counts_every_topic_of_a_forum_group(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    await run_bot(engine, chat_waiting_max=2)
    engine.hang = True  # every question stays waiting
    forum = fake.group_chat("Forum", forum=True)
    people = [fake.user(name, name.lower()) for name in ("Ann", "Ben", "Cy", "Di")]
    fake.send_text(forum, people[0], MENTION + "first", thread_id=10)
    fake.send_text(forum, people[1], MENTION + "second", thread_id=20)
    await fake.wait_for(lambda: len(engine.history) == 2, timeout=10)
    fake.send_text(forum, people[2], MENTION + "third", thread_id=30)
    fake.send_text(forum, people[2], MENTION + "third again", thread_id=30)
    fake.send_text(forum, people[3], MENTION + "fourth", thread_id=10)
    await settle(fake)
    assert len(engine.history) == 2
    third = [t for t in texts(fake, forum, 30) if t.startswith("⏳")]
    fourth = [t for t in texts(fake, forum, 10) if t.startswith("⏳")]
    assert len(third) == 1 and "2 questions are already waiting" in third[0]
    assert len(fourth) == 1
    # Another chat is not held up by this one.
    engine.hang = False
    other = fake.group_chat("Other")
    engine.enqueue("Elsewhere, at once.")
    fake.send_text(other, people[3], MENTION + "hello")
    await fake.wait_for(lambda: "Elsewhere, at once." in texts(fake, other), timeout=10)


async def test_stats_list_the_top_users_and_chats_for_bot_admins(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    boss = fake.user("Boss", "boss")
    await run_bot(engine, admins=[boss["id"]], user_messages_per_minute=1)
    alice, bob = fake.user("Alice", "alice"), fake.user("Bob", "bob")
    group = fake.group_chat("Llamas")
    engine.enqueue("a b c d", "e f")
    fake.send_text(group, alice, MENTION + "long answer")
    await fake.wait_for(lambda: len(texts(fake, group)) == 1, timeout=10)
    fake.send_text(group, bob, MENTION + "short answer")
    await fake.wait_for(lambda: len(texts(fake, group)) == 2, timeout=10)
    fake.send_text(group, bob, MENTION + "too fast")
    await fake.wait_for(lambda: len(texts(fake, group)) == 3, timeout=10)
    bob_chat = fake.private_chat(bob)
    fake.send_text(bob_chat, bob, "/stats")
    await fake.wait_for(lambda: texts(fake, bob_chat), timeout=10)
    assert texts(fake, bob_chat) == ["Only the bot's admins can see the statistics."]
    boss_chat = fake.private_chat(boss)
    fake.send_text(boss_chat, boss, "/stats")
    await fake.wait_for(lambda: texts(fake, boss_chat), timeout=10)
    stats = texts(fake, boss_chat)[0]
    today, week = stats.split("\n\n")
    assert today.startswith("Today (UTC):") and week.startswith("Last 7 days:")
    lines = today.splitlines()
    assert lines[1] == "Top users:"
    assert lines[2] == f"Alice ({alice['id']}): 4 tokens, 1 question, 0 refused"
    assert lines[3] == f"Bob ({bob['id']}): 2 tokens, 1 question, 1 refused"
    assert lines[5] == f"Llamas ({group['id']}): 6 tokens, 2 questions, 1 refused"
