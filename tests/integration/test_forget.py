"""/forget and the retention period through the fake Bot API, on SQLite and PostgreSQL: the
confirmation, group admins only, the turns gone from the database and from the next prompt, the
engine told to drop the chat's cache; old turns pruned at start while a reply in progress keeps
its own."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.chat.forgetting import CONFIRM_SECONDS, ChatForgetting
from bot.core.chats import ChatRef, cache_keys
from bot.ops.runtime import open_runtime
from bot.store import repository as repo
from bot.store.database import migrate_async, open_database, sessions
from bot.store.schema import TurnRow, utcnow
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine
from tests.sinks import RecordingSink

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


async def stored(runner: Any, chat_id: int) -> list[str]:
    async with sessions(runner.runtime.database)() as session:
        rows = await session.execute(
            select(TurnRow.text).where(TurnRow.chat_id == chat_id).order_by(TurnRow.id)
        )
        return list(rows.scalars())


async def answered(fake: FakeBotAPI, chat: dict, count: int) -> str:
    await fake.wait_for(lambda: len(texts(fake, chat)) >= count, timeout=10)
    return texts(fake, chat)[count - 1]


async def test_forget_asks_first_then_deletes_the_conversation(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    runner = await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue("Llamas eat grass.", "Yes, hay too.")
    fake.send_text(chat, alice, "What do llamas eat?")
    await answered(fake, chat, 1)
    fake.send_text(chat, alice, "Hay as well?")
    await answered(fake, chat, 2)
    fake.send_text(chat, alice, "/temp 0.5")
    await answered(fake, chat, 3)

    fake.send_text(chat, alice, "/forget")
    asked = await answered(fake, chat, 4)
    assert asked.startswith("This deletes the conversation I store of this chat: 4 messages since ")
    assert "Send /forget yes within 2 minutes to confirm." in asked
    assert len(await stored(runner, chat["id"])) == 4 and engine.forgotten == []

    fake.send_text(chat, alice, "/forget yes")
    done = await answered(fake, chat, 5)
    assert done == ("Forgotten: 4 messages and the model's saved context of this chat. "
                    "Settings stay (/settings).")
    assert await stored(runner, chat["id"]) == []
    assert engine.forgotten == list(cache_keys(chat["id"]))  # the replies' and the summary's

    # A second "yes" is not a confirmation any more: it asks again.
    fake.send_text(chat, alice, "/forget yes")
    assert (await answered(fake, chat, 6)).startswith(
        "This deletes the conversation I store of this chat: 0 messages,")

    engine.enqueue("Hello again.")
    fake.send_text(chat, alice, "Do you remember me?")
    await answered(fake, chat, 7)
    prompt = engine.prompts()[-1]
    assert "Do you remember me?" in prompt
    assert "llamas" not in prompt and "Hay" not in prompt and "grass" not in prompt
    assert engine.history[-1].sampling.temp == pytest.approx(0.5)  # settings stay


async def test_in_a_group_only_admins_may_forget(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    boss = fake.user("Boss")
    runner = await run_bot(engine, admins=[boss["id"]])
    group = fake.group_chat("Llama fans")
    owner, member = fake.user("Olga"), fake.user("Max")
    fake.set_admins(group, [owner["id"]])
    engine.enqueue("Hi Max!")
    fake.send_text(group, member, "/ask say hi")
    await answered(fake, group, 1)

    fake.send_text(group, member, "/forget@alpaca_test_bot")
    assert await answered(fake, group, 2) == "Only the group's admins can make me forget this chat."
    fake.send_text(group, owner, "/forget@alpaca_test_bot")
    assert (await answered(fake, group, 3)).startswith("This deletes the conversation")
    # The member cannot confirm what the admin asked for.
    fake.send_text(group, member, "/forget yes")
    assert await answered(fake, group, 4) == "Only the group's admins can make me forget this chat."
    assert len(await stored(runner, group["id"])) == 2
    fake.send_text(group, owner, "/forget@alpaca_test_bot yes")
    assert (await answered(fake, group, 5)).startswith("Forgotten: 2 messages")
    assert await stored(runner, group["id"]) == []
    # A bot admin who is not a group admin may too.
    fake.send_text(group, boss, "/forget")
    assert (await answered(fake, group, 6)).startswith("This deletes the conversation")


async def test_forget_stops_a_reply_being_written(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine(delay=0.05)
    engine.hang = True
    runner = await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "/forget")
    await answered(fake, chat, 1)
    engine.enqueue("a b c d e f g h")
    fake.send_text(chat, alice, "Tell me everything")
    await asyncio.wait_for(engine.started.wait(), timeout=10)
    fake.send_text(chat, alice, "/forget yes")
    await fake.wait_for(lambda: any(t.startswith("Forgotten: 2 messages") for t in texts(fake, chat)),
                        timeout=10)
    assert await stored(runner, chat["id"]) == []
    assert engine.running == 0


async def test_an_unconfirmed_forget_expires(make_settings: Any) -> None:
    engine = ScriptedEngine()
    async with open_runtime(make_settings(), engine=engine) as runtime:
        service = runtime.service
        now = [1000.0]
        forgetting = ChatForgetting(sessions=runtime.sessions, model=service.running_model,
                                    conversation=service.conversation,
                                    activity=service.activity, clock=lambda: now[0])
        ref = ChatRef(3, "private", "Dora")
        accepted = await service.conversation.accept(ref, "remember this")
        await service.conversation.write_reply(accepted, RecordingSink())
        assert "2 messages" in await forgetting.request(ref, "")
        now[0] += CONFIRM_SECONDS + 1
        late = await forgetting.request(ref, "yes")
        assert late.startswith("That confirmation came too late. This deletes")
        assert await forgetting.request(ref, "please") == (
            "Usage: /forget, then /forget yes to confirm.")
        now[0] += CONFIRM_SECONDS - 1
        assert (await forgetting.request(ref, "YES")).startswith("Forgotten: 2 messages")
        assert engine.forgotten == list(cache_keys(3))


async def test_retention_deletes_old_turns_at_start(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, bot_settings: Any
) -> None:
    settings = bot_settings(retention_days=3)
    await migrate_async(settings.database_url)
    database = open_database(settings.database_url)
    chat = fake.private_chat(fake.user("Old Timer"))
    try:
        async with sessions(database)() as session:
            ref = ChatRef(chat["id"], "private", "Old Timer")
            await repo.get_or_create_chat(session, ref)
            old = await repo.add_user_turn(session, ref.chat_id, "a question from last week")
            reply = await repo.start_reply(session, old)
            await repo.finish_reply(session, reply, "an old answer", reason="eos", n_tokens=3)
            reply.delivered = True
            await repo.add_user_turn(session, ref.chat_id, "a question from today")
            await session.flush()
            await session.execute(update(TurnRow).where(TurnRow.id.in_([old.id, reply.id]))
                                  .values(created_at=utcnow() - timedelta(days=7)))
            await session.commit()
    finally:
        await database.dispose()
    engine.enqueue("today's answer")
    runner = await run_bot(engine, retention_days=3)
    # The question pending at start is answered after the first pass, from what it left.
    await fake.wait_for(lambda: texts(fake, chat) == ["today's answer"], timeout=10)
    remaining = await stored(runner, ref.chat_id)
    assert "a question from last week" not in remaining and "an old answer" not in remaining
    assert remaining[0] == "a question from today"
    assert str(ref.chat_id) in engine.forgotten
    assert "a question from today" in engine.prompts()[0]
    assert "last week" not in engine.prompts()[0] and "old answer" not in engine.prompts()[0]


async def test_forget_in_a_topic_forgets_that_topic_only(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    runner = await run_bot(engine)
    forum = fake.group_chat("Forum", forum=True)
    alice = fake.user("Alice", "alice")
    fake.set_admins(forum, [alice["id"]])

    def in_topic(thread: int | None) -> list[str]:
        return [m.text for m in fake.bot_messages(forum) if m.thread_id == thread]

    engine.enqueue("Llamas hum.", "Rust is a language.")
    fake.send_text(forum, alice, "@alpaca_test_bot tell me about llamas", thread_id=10)
    await fake.wait_for(lambda: in_topic(10) == ["Llamas hum."], timeout=10)
    fake.send_text(forum, alice, "@alpaca_test_bot tell me about rust", thread_id=20)
    await fake.wait_for(lambda: in_topic(20) == ["Rust is a language."], timeout=10)
    llamas, rust = engine.history[0].chat_key, engine.history[1].chat_key

    fake.send_text(forum, alice, "/forget", thread_id=10)
    await fake.wait_for(lambda: len(in_topic(10)) == 2, timeout=10)
    assert in_topic(10)[1].startswith("This deletes the conversation I store of this topic: 2 ")
    fake.send_text(forum, alice, "/forget yes", thread_id=10)
    await fake.wait_for(lambda: len(in_topic(10)) == 3, timeout=10)
    assert in_topic(10)[2].startswith("Forgotten: 2 messages and the model's saved context of "
                                      "this topic.")
    assert engine.forgotten == list(cache_keys(int(llamas)))
    assert await stored(runner, int(llamas)) == []
    assert await stored(runner, int(rust)) == ["tell me about rust", "Rust is a language."]
