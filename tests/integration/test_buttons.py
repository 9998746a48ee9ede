"""The buttons under a reply, through the fake Bot API: ⏹ Stop while it is written, 🔄 Regenerate
and ➡ Continue after it, /retry and /continue; who may press, stale and forged presses, every
callback query answered."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import pytest
from sqlalchemy import select

from bot.chat.redo import BUSY, DEAD, NOTHING_TO_CONTINUE, NOTHING_TO_REDO
from bot.console import ConsoleFront, handle_command
from bot.ops.runtime import open_runtime
from bot.store.schema import TurnRow
from bot.telegram.presses import NOT_WRITING, NOT_YOURS
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

STOP, REGENERATE, CONTINUE = "⏹ Stop", "🔄 Regenerate", "➡ Continue"


def buttons(message: Any) -> list[str]:
    rows = (message.reply_markup or {}).get("inline_keyboard") or []
    return [button["text"] for row in rows for button in row]


def last(fake: FakeBotAPI, chat: dict) -> Any:
    return fake.bot_messages(chat)[-1]


async def answered(fake: FakeBotAPI, query_id: str) -> str | None:
    """The text the bot answered the press with (waits for the answer)."""
    await fake.wait_for(lambda: fake.callback_query(query_id).answered, timeout=10,
                        what=f"an answer to callback query {query_id}")
    return fake.callback_query(query_id).text


def all_answered(fake: FakeBotAPI) -> bool:
    return all(query.answered for query in fake.callback_queries())


async def replies(runner: Any) -> list[TurnRow]:
    from bot.store.database import sessions

    async with sessions(runner.runtime.database)() as session:
        query = select(TurnRow).where(TurnRow.role == "assistant").order_by(TurnRow.id)
        return list((await session.execute(query)).scalars())


async def settled(runner: Any, text: str) -> list[TurnRow]:
    """The stored replies once one reads `text` and is delivered."""
    deadline = time.monotonic() + 10
    while True:
        rows = await replies(runner)
        if any(r.text == text and r.delivered for r in rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def test_stop_stops_the_reply_being_written(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine(delay=0.05)
    engine.hang = True
    await run_bot(engine)
    group = fake.group_chat("Llamas")
    alice = fake.user("Alice", "alice")
    engine.enqueue("one two three")
    fake.send_text(group, alice, "@alpaca_test_bot go on forever")
    # Pressed once the whole text shows, the model hanging after it (the text kept is checked).
    await fake.wait_for(lambda: fake.bot_messages(group) and
                        buttons(last(fake, group)) == [STOP] and
                        texts(fake, group)[-1].startswith("one two three"), timeout=10)
    writing = last(fake, group)
    [[stop]] = writing.reply_markup["inline_keyboard"]
    assert len(stop["callback_data"].encode()) <= 64
    query = fake.press(writing, STOP, alice)
    assert await answered(fake, query) == "⏹ Stopping…"
    await fake.wait_for(lambda: texts(fake, group)[-1].endswith("⏹ stopped"), timeout=10)
    assert texts(fake, group)[-1].startswith("one two three")
    assert buttons(last(fake, group)) == [REGENERATE]
    # Pressed again (an old client still shows it): nothing is being written.
    late = fake.push_callback(writing, stop["callback_data"], alice)
    assert await answered(fake, late) == NOT_WRITING
    assert all_answered(fake)


async def test_only_the_asker_and_admins_may_press(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine(delay=0.05)
    engine.hang = True
    boss = fake.user("Boss")
    await run_bot(engine, admins=[boss["id"]])
    group = fake.group_chat("Llamas")
    alice, bob, olga = fake.user("Alice"), fake.user("Bob"), fake.user("Olga")
    fake.set_admins(group, [olga["id"]])
    engine.enqueue("thinking")
    fake.send_text(group, alice, "@alpaca_test_bot think")
    await fake.wait_for(lambda: fake.bot_messages(group) and
                        buttons(last(fake, group)) == [STOP], timeout=10)
    assert await answered(fake, fake.press(last(fake, group), STOP, bob)) == NOT_YOURS
    await asyncio.sleep(0.2)
    assert engine.running == 1  # still writing
    assert await answered(fake, fake.press(last(fake, group), STOP, olga)) == "⏹ Stopping…"
    await fake.wait_for(lambda: buttons(last(fake, group)) == [REGENERATE], timeout=10)
    engine.hang = False
    engine.enqueue("a new sample")
    assert await answered(fake, fake.press(last(fake, group), REGENERATE, bob)) == NOT_YOURS
    # The bot's own admins may press anywhere.
    assert await answered(fake, fake.press(last(fake, group), REGENERATE, boss)) == (
        "🔄 Writing it again…")
    await fake.wait_for(lambda: texts(fake, group) == ["a new sample"], timeout=10)
    assert all_answered(fake)


async def test_regenerate_replaces_the_reply_in_its_message_and_the_window(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    engine = ScriptedEngine(delay=0.01)
    runner = await run_bot(engine, seed=5)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue("the first answer", "the second answer", "about two million")
    fake.send_text(chat, alice, "What is the capital of France?")
    await fake.wait_for(lambda: texts(fake, chat) == ["the first answer"], timeout=10)
    await settled(runner, "the first answer")
    [message] = fake.bot_messages(chat)
    assert buttons(message) == [REGENERATE]
    query = fake.press(message, REGENERATE, alice)
    assert await answered(fake, query) == "🔄 Writing it again…"
    await fake.wait_for(lambda: texts(fake, chat) == ["the second answer"]
                        and buttons(last(fake, chat)) == [REGENERATE], timeout=10)
    [again] = fake.bot_messages(chat)
    assert again.message_id == message.message_id
    # The same question, without the old answer in the prompt: a new sample of it (a fixed
    # seed would write the same reply again).
    assert engine.prompts()[1] == engine.prompts()[0]
    assert [r.sampling.seed for r in engine.history] == [5, -1]
    rows = await settled(runner, "the second answer")
    assert [(r.text, r.state, r.delivered) for r in rows] == [
        ("the second answer", "complete", True)]
    # The window holds the new reply, not the old one.
    fake.send_text(chat, alice, "How many people live there?")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=10)
    assert "the second answer" in engine.prompts()[2]
    assert "the first answer" not in engine.prompts()[2]
    assert all_answered(fake)


async def test_continue_goes_on_with_a_reply_cut_off_at_n(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine(delay=0.01)
    runner = await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "/n 3")
    engine.enqueue("one two three four five", " four five")
    fake.send_text(chat, alice, "count to five")
    await fake.wait_for(lambda: texts(fake, chat)[1:] == ["one two three"], timeout=10)
    await settled(runner, "one two three")
    reply = last(fake, chat)
    assert buttons(reply) == [REGENERATE, CONTINUE]
    assert await answered(fake, fake.press(reply, CONTINUE, alice)) == "➡ Continuing…"
    # It ended by itself: nothing more to continue.
    await fake.wait_for(lambda: texts(fake, chat)[1:] == ["one two three four five"]
                        and buttons(last(fake, chat)) == [REGENERATE], timeout=10)
    assert last(fake, chat).message_id == reply.message_id
    # The prompt is the first one with the reply left open: no end of the turn after it.
    first, going_on = engine.prompts()
    assert going_on == first + "one two three"
    rows = await settled(runner, "one two three four five")
    assert [(r.text, r.stop_reason, r.n_tokens) for r in rows] == [
        ("one two three four five", "eos", 6)]
    assert all_answered(fake)


async def test_buttons_of_an_older_reply_stop_working(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine()
    await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue("first", "second")
    fake.send_text(chat, alice, "one")
    await fake.wait_for(lambda: texts(fake, chat) == ["first"], timeout=10)
    fake.send_text(chat, alice, "two")
    await fake.wait_for(lambda: texts(fake, chat) == ["first", "second"], timeout=10)
    older = fake.bot_messages(chat)[0]
    assert buttons(older) == [REGENERATE]
    text = await answered(fake, fake.press(older, REGENERATE, alice))
    assert text == "A newer message exists: only the last reply can be written again."
    await fake.wait_for(lambda: fake.bot_messages(chat)[0].reply_markup is None, timeout=10)
    assert fake.bot_messages(chat)[0].text == "first" and len(engine.history) == 2
    assert buttons(fake.bot_messages(chat)[1]) == [REGENERATE]


async def test_forged_and_foreign_presses_are_answered_and_ignored(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    engine = ScriptedEngine()
    runner = await run_bot(engine)
    alice, mallory = fake.user("Alice"), fake.user("Mallory")
    chat, other = fake.private_chat(alice), fake.private_chat(mallory)
    engine.enqueue("for Alice", "for Mallory")
    fake.send_text(chat, alice, "hi")
    await fake.wait_for(lambda: texts(fake, chat) == ["for Alice"], timeout=10)
    fake.send_text(other, mallory, "hi")
    await fake.wait_for(lambda: texts(fake, other) == ["for Mallory"], timeout=10)
    await settled(runner, "for Mallory")
    alices_question = (await replies(runner))[0].reply_to
    mallorys_message = fake.bot_messages(other)[0]
    for data in (f"r:{alices_question}", "r:999999", "x" * 64, "r:1:2", f"s:{alices_question}"):
        query = fake.push_callback(mallorys_message, data, mallory)
        assert await answered(fake, query) == DEAD, data
    assert len(engine.history) == 2
    assert texts(fake, chat) == ["for Alice"] and texts(fake, other) == ["for Mallory"]
    assert all_answered(fake)


async def test_a_second_press_while_it_is_rewritten_is_refused(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    engine = ScriptedEngine(delay=0.05)
    runner = await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue("first", " ".join(["again"] * 20))
    fake.send_text(chat, alice, "hi")
    # The message and its buttons show before the bot hears back and stores the reply as
    # delivered (on PostgreSQL under load, long enough for a press to come first): wait for both.
    await fake.wait_for(lambda: texts(fake, chat) == ["first"]
                        and buttons(last(fake, chat)) == [REGENERATE], timeout=10)
    await settled(runner, "first")
    message = last(fake, chat)
    one, two = fake.press(message, REGENERATE, alice), fake.press(message, REGENERATE, alice)
    assert await answered(fake, one) == "🔄 Writing it again…"
    assert await answered(fake, two) == BUSY
    await fake.wait_for(lambda: texts(fake, chat) == [" ".join(["again"] * 20)], timeout=20)
    assert len(engine.history) == 2


async def test_a_restart_mid_regenerate_shows_the_stored_reply_again(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    engine = ScriptedEngine(delay=0.05)
    runner = await run_bot(engine, stream_mode="edit")
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue("the stored answer")
    fake.send_text(chat, alice, "hi")
    await fake.wait_for(lambda: texts(fake, chat) == ["the stored answer"], timeout=10)
    await settled(runner, "the stored answer")
    engine.hang = True
    engine.enqueue("half of a new one")
    await answered(fake, fake.press(last(fake, chat), REGENERATE, alice))
    await fake.wait_for(lambda: texts(fake, chat) == ["half of a new one"], timeout=10)
    assert buttons(last(fake, chat)) == [STOP]
    await runner.stop()

    again = await run_bot(ScriptedEngine(), stream_mode="edit")
    await fake.wait_for(lambda: texts(fake, chat) == ["the stored answer"], timeout=10)
    assert buttons(last(fake, chat)) == [REGENERATE] and len(fake.bot_messages(chat)) == 1
    rows = await settled(again, "the stored answer")
    assert [(r.text, r.delivered) for r in rows] == [("the stored answer", True)]


async def test_retry_and_continue_commands(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine()
    await run_bot(engine)
    group = fake.group_chat("Llamas")
    alice, bob = fake.user("Alice"), fake.user("Bob")
    fake.send_text(group, alice, "/retry")
    await fake.wait_for(lambda: texts(fake, group) == [NOTHING_TO_REDO], timeout=10)
    engine.enqueue("first take", "second take")
    fake.send_text(group, alice, "@alpaca_test_bot hello")
    await fake.wait_for(lambda: texts(fake, group)[-1:] == ["first take"], timeout=10)
    fake.send_text(group, alice, "/continue")
    await fake.wait_for(lambda: texts(fake, group)[-1:] == [NOTHING_TO_CONTINUE], timeout=10)
    fake.send_text(group, bob, "/retry")
    await fake.wait_for(lambda: texts(fake, group)[-1].startswith("Only the person who asked"),
                        timeout=10)
    fake.send_text(group, alice, "/retry")
    await fake.wait_for(lambda: "second take" in texts(fake, group), timeout=10)
    assert texts(fake, group).count("first take") == 0  # rewritten in place
    assert len(engine.history) == 2


async def test_the_console_retries_and_continues(make_settings: Any) -> None:
    engine = ScriptedEngine()
    out = io.StringIO()
    async with open_runtime(make_settings(), engine=engine) as runtime:
        service = runtime.service
        front = ConsoleFront(service, out, color=False)
        assert await handle_command(front, service, "/retry") == NOTHING_TO_REDO
        await handle_command(front, service, "/n 2")
        engine.enqueue("one two three", "a new one", " more")  # /n 2 cuts them
        await front.ask("count")
        assert await handle_command(front, service, "/retry") is None
        assert await handle_command(front, service, "/continue") is None
        assert out.getvalue().endswith("one two\na new\n… more\n")
        assert engine.prompts()[2].endswith("a new")


@pytest.mark.log_errors(r"writing the reply to turn \d+ again failed")
async def test_a_regenerate_that_fails_or_is_stopped_at_once_keeps_the_reply(
    fake: FakeBotAPI, run_bot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = ScriptedEngine(delay=0.05)
    runner = await run_bot(engine, stream_mode="edit")
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue("the answer")
    fake.send_text(chat, alice, "hi")
    await fake.wait_for(lambda: texts(fake, chat) == ["the answer"], timeout=10)
    await settled(runner, "the answer")
    # Stopped before a new word: the reply stays as it was, its buttons back.
    engine.hang = True
    engine.enqueue("")
    await answered(fake, fake.press(last(fake, chat), REGENERATE, alice))
    await fake.wait_for(lambda: buttons(last(fake, chat)) == [STOP], timeout=10)
    await answered(fake, fake.press(last(fake, chat), STOP, alice))
    await fake.wait_for(lambda: buttons(last(fake, chat)) == [REGENERATE], timeout=10)
    assert texts(fake, chat) == ["the answer"]
    # The model fails: the reply stays, with a note saying so.
    engine.hang = False

    async def broken(request: Any) -> Any:
        raise RuntimeError("the model fell over")
        yield  # pragma: no cover

    monkeypatch.setattr(engine, "generate", broken)
    await answered(fake, fake.press(last(fake, chat), REGENERATE, alice))
    await fake.wait_for(lambda: texts(fake, chat)[0].startswith("the answer\n\n⚠️"), timeout=10)
    assert buttons(last(fake, chat)) == [REGENERATE]
    rows = await settled(runner, "the answer")
    assert [(r.text, r.state, r.delivered) for r in rows] == [("the answer", "complete", True)]


async def test_buttons_in_a_forum_topic_belong_to_the_topic(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine()
    await run_bot(engine)
    forum = fake.group_chat("Forum", forum=True)
    alice = fake.user("Alice", "alice")
    engine.enqueue("in topic five", "in the general topic", "topic five, again")
    fake.send_text(forum, alice, "@alpaca_test_bot hi", thread_id=5)
    await fake.wait_for(lambda: texts(fake, forum) == ["in topic five"], timeout=10)
    fake.send_text(forum, alice, "@alpaca_test_bot hello")  # the group's own conversation
    await fake.wait_for(lambda: len(texts(fake, forum)) == 2, timeout=10)
    # A newer turn in another conversation leaves the topic's last reply its last one.
    topic_reply = fake.bot_messages(forum)[0]
    assert topic_reply.thread_id == 5
    query = fake.press(topic_reply, REGENERATE, alice)
    assert await answered(fake, query) == "🔄 Writing it again…"
    await fake.wait_for(lambda: texts(fake, forum)[0] == "topic five, again", timeout=10)
    assert "hello" not in engine.prompts()[2] and "hi" in engine.prompts()[2]
    assert fake.bot_messages(forum)[0].thread_id == 5
