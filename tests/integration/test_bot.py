"""The Telegram bot end to end: the fake Bot API on loopback, real SQLite, a scripted model."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.chat.conversation import STOPPED_EARLY
from bot.store.database import open_database, sessions
from bot.store.schema import TurnRow
from tests.botrunner import GateCall
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


REPO = Path(__file__).resolve().parents[2]
"""The checkout, where `python -m tests.killedbot` runs."""


async def turns(runner, until=None, wait: float = 5.0) -> list[TurnRow]:  # type: ignore[no-untyped-def]
    """The stored turns, once `until(rows)` holds (the last write follows the last API call)."""
    from bot.store.database import sessions

    deadline = time.monotonic() + wait
    while True:
        async with sessions(runner.runtime.database)() as session:
            rows = list((await session.execute(select(TurnRow).order_by(TurnRow.id))).scalars())
        if until is None or until(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def test_private_chat_is_answered_and_stored(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    runner = await run_bot(engine)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    engine.enqueue("Paris is the capital of France.")
    fake.send_text(chat, alice, "What is the capital of France?")
    await fake.wait_for(lambda: texts(fake, chat) == ["Paris is the capital of France."], timeout=10)
    assert "What is the capital of France?" in engine.prompts()[0]
    rows = await turns(runner, until=lambda rows: len(rows) == 2 and rows[1].delivered)
    assert [(r.role, r.state, r.text) for r in rows] == [
        ("user", "answered", "What is the capital of France?"),
        ("assistant", "complete", "Paris is the capital of France."),
    ]
    assert rows[1].delivered and rows[1].message_id == fake.bot_messages(chat)[0].message_id
    # The conversation continues with the earlier turns in the window.
    engine.enqueue("About two million.")
    fake.send_text(chat, alice, "How many people live there?")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=10)
    second = engine.prompts()[1]
    assert second.index("capital of France?") < second.index("Paris is the capital") < second.index(
        "How many people"
    )


async def test_group_answers_mentions_and_replies_only(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    await run_bot(engine)
    group = fake.group_chat("Llama fans")
    alice, bob = fake.user("Alice", "alice"), fake.user("Bob", "bob")
    fake.send_text(group, alice, "just chatting among humans")
    engine.enqueue("Hi Alice!")
    question = fake.send_text(group, alice, "@alpaca_test_bot say hi")
    await fake.wait_for(lambda: texts(fake, group) == ["Hi Alice!"], timeout=10)
    reply = fake.bot_messages(group)[0]
    assert reply.reply_to_message_id == question["message_id"]
    # The window records who said what, without the mention.
    assert "Alice: say hi" in engine.prompts()[0]
    assert "just chatting" not in engine.prompts()[0]
    engine.enqueue("Hello Bob.")
    fake.send_text(group, bob, "and me?", reply_to=reply.message_id)
    await fake.wait_for(lambda: len(texts(fake, group)) == 2, timeout=10)
    prompt = engine.prompts()[1]
    assert "Alice: say hi" in prompt and "Hi Alice!" in prompt and "Bob: and me?" in prompt
    engine.enqueue("Answer to ask.")
    fake.send_text(group, bob, "/ask@alpaca_test_bot what now?")
    await fake.wait_for(lambda: len(texts(fake, group)) == 3, timeout=10)
    assert "Bob: what now?" in engine.prompts()[2]
    assert len(engine.history) == 3


async def test_commands_with_bot_suffix_and_group_admins(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    await run_bot(engine)
    group = fake.group_chat("Admins")
    owner, member = fake.user("Olga", "olga"), fake.user("Max", "max")
    fake.set_admins(group, [owner["id"]])
    fake.send_text(group, member, "/temp@alpaca_test_bot 0.9")
    await fake.wait_for(lambda: texts(fake, group), timeout=10)
    assert texts(fake, group)[-1] == "Only the group's admins can change settings."
    fake.send_text(group, owner, "/temp@alpaca_test_bot 0.7")
    await fake.wait_for(lambda: len(texts(fake, group)) == 2, timeout=10)
    assert texts(fake, group)[-1] == "--temp set to 0.7 for this chat."
    # Everyone may read settings; a command for another bot is ignored.
    fake.send_text(group, member, "/temp@some_other_bot 1.5")
    fake.send_text(group, member, "/temp")
    await fake.wait_for(lambda: len(texts(fake, group)) == 3, timeout=10)
    assert texts(fake, group)[-1].startswith("--temp 0.7 ")
    fake.send_text(group, member, "/reset")
    await fake.wait_for(lambda: len(texts(fake, group)) == 4, timeout=10)
    assert "admins" in texts(fake, group)[-1]
    fake.send_text(group, member, "/system You are a pirate.")
    await fake.wait_for(lambda: len(texts(fake, group)) == 5, timeout=10)
    assert "admins" in texts(fake, group)[-1]
    # A configured bot admin who is not a group admin may change settings too.
    assert engine.history == []


async def test_configured_bot_admin_and_invalid_values(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    boss = fake.user("Boss", "boss")
    await run_bot(engine, admins=[boss["id"]])
    group = fake.group_chat()
    fake.send_text(group, boss, "/n 128")
    await fake.wait_for(lambda: texts(fake, group), timeout=10)
    assert texts(fake, group)[-1] == "-n set to 128 for this chat."
    fake.send_text(group, boss, "/top_p 1.5")
    await fake.wait_for(lambda: len(texts(fake, group)) == 2, timeout=10)
    assert texts(fake, group)[-1].startswith("1.5 is out of range. Usage: /top_p VALUE")
    fake.send_text(group, boss, "/ctx lots")
    await fake.wait_for(lambda: len(texts(fake, group)) == 3, timeout=10)
    assert texts(fake, group)[-1].startswith("'lots' is not a valid value. Usage: /ctx VALUE")


async def test_settings_survive_a_restart(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    runner = await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "/temp 0.65")
    fake.send_text(chat, alice, "/system Answer like a sailor.")
    engine.enqueue("Ahoy.")
    fake.send_text(chat, alice, "Hello")
    await fake.wait_for(lambda: "Ahoy." in texts(fake, chat), timeout=10)
    await runner.stop()

    again = ScriptedEngine()
    await run_bot(again)
    fake.send_text(chat, alice, "/settings")
    await fake.wait_for(lambda: texts(fake, chat)[-1].startswith("Model:"), timeout=10)
    shown = texts(fake, chat)[-1]
    assert "/temp (--temp) = 0.65" in shown
    assert "/system = Answer like a sailor." in shown
    assert "/2048 tokens" in shown
    again.enqueue("Still here.")
    fake.send_text(chat, alice, "Remember me?")
    await fake.wait_for(lambda: "Still here." in texts(fake, chat), timeout=10)
    prompt = again.prompts()[0]
    assert "Answer like a sailor." in prompt and "Hello" in prompt and "Ahoy." in prompt
    assert again.history[0].sampling.temp == pytest.approx(0.65)


async def test_long_reply_continues_in_further_messages(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    paragraph = " ".join(f"word{i} & <tag>" for i in range(600))  # ~9000 characters, 1800 words
    engine.enqueue(paragraph)
    fake.send_text(chat, alice, "/n 1900")
    fake.send_text(chat, alice, "write a lot")
    await fake.wait_for(lambda: len(texts(fake, chat)) >= 4, timeout=20)
    await fake.wait_for(lambda: " ".join(texts(fake, chat)[1:]) == paragraph, timeout=20)
    replies = fake.bot_messages(chat)[1:]
    assert len(replies) == 3
    assert all(len(message.text) <= 4096 for message in replies)


FLOOD_SLACK = 0.5
"""How late the first call after a flood ban may arrive: the 429's way back, the next call's way
there and a loaded machine's scheduling; a bot adding a second (or doubling the ban) is later."""


async def test_flood_control_mid_stream_is_waited_out_exactly(fake: FakeBotAPI, run_bot) -> None:
    engine = ScriptedEngine(delay=0.05)
    await run_bot(engine, stream_mode="edit")
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    words = [f"w{i}" for i in range(80)]
    engine.enqueue(" ".join(words))
    fake.fail_next("editMessageText", 429, retry_after=2, chat_id=chat)
    fake.send_text(chat, alice, "stream please")
    await fake.wait_for(lambda: texts(fake, chat) == [" ".join(words)], timeout=20)
    assert fake.violations() == []
    rejected = [r for r in fake.requests("editMessageText") if r.status == 429]
    assert len(rejected) == 1
    later = [r for r in fake.requests() if r.chat_id == chat["id"] and r.at > rejected[0].at]
    # Waited out exactly: not before the ban ends, and not much after (text is waiting to go).
    assert later and 2.0 <= later[0].at - rejected[0].at <= 2.0 + FLOOD_SLACK


async def test_message_not_modified_and_bad_entities_never_surface(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    await run_bot(engine, admins=[])
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.fail_next(
        "sendMessage", 400,
        "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 3",
        chat_id=chat,
    )
    engine.enqueue("Some **bold** text")
    fake.send_text(chat, alice, "format it")
    await fake.wait_for(lambda: texts(fake, chat) == ["Some bold text"], timeout=10)
    assert fake.bot_messages(chat)[0].parse_mode in (None, "")


async def test_stop_cancels_a_running_reply(fake: FakeBotAPI, run_bot) -> None:
    engine = ScriptedEngine(delay=0.05)
    engine.hang = True
    await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue("one two three")
    fake.send_text(chat, alice, "go on forever")
    # A private chat: the reply streams as a live draft.
    await fake.wait_for(lambda: "one two three" in [text for _, text in fake.drafts(chat)],
                        timeout=10)
    fake.send_text(chat, alice, "/stop")
    await fake.wait_for(lambda: texts(fake, chat) and texts(fake, chat)[-1].endswith("stopped"),
                        timeout=10)
    assert texts(fake, chat)[-1].startswith("one two three")


async def test_stop_also_cancels_the_questions_waiting_in_the_chat(fake: FakeBotAPI, run_bot) -> None:
    """A private chat's questions are answered one after another: /stop ends the reply being
    written and cancels the ones waiting behind it, which never reach the model."""
    engine = ScriptedEngine(delay=0.05)
    engine.hang = True
    runner = await run_bot(engine, stream_mode="edit")
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue("one two three")
    fake.send_text(chat, alice, "go on forever")
    await fake.wait_for(lambda: any("one two three" in t for t in texts(fake, chat)), timeout=10)
    fake.send_text(chat, alice, "and then this")
    fake.send_text(chat, alice, "and this too")
    await turns(runner, until=lambda rows: [r.role for r in rows].count("user") == 3)
    fake.send_text(chat, alice, "/stop")
    await fake.wait_for(lambda: texts(fake, chat)[0].endswith("stopped")
                        and texts(fake, chat)[1:] == [STOPPED_EARLY] * 2, timeout=10)
    engine.hang = False
    engine.enqueue("a fresh answer")
    fake.send_text(chat, alice, "a new question")
    await fake.wait_for(lambda: texts(fake, chat)[-1] == "a fresh answer", timeout=10)
    assert [request.turns[-1].text for request in engine.history] == [
        "go on forever", "a new question"]


async def test_too_long_input_gets_a_clear_answer(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    await run_bot(engine, max_input_chars=100)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "x" * 101)
    await fake.wait_for(lambda: texts(fake, chat), timeout=10)
    assert texts(fake, chat)[0] == (
        "Your message is 101 characters; the limit is 100. Send a shorter message or split it."
    )
    assert engine.history == []


async def test_forum_topic_replies_stay_in_the_topic(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    await run_bot(engine)
    forum = fake.group_chat("Forum", forum=True)
    alice = fake.user("Alice", "alice")
    engine.enqueue("In the topic.")
    fake.send_text(forum, alice, "@alpaca_test_bot hello", thread_id=77)
    await fake.wait_for(lambda: texts(fake, forum) == ["In the topic."], timeout=10)
    assert fake.bot_messages(forum)[0].thread_id == 77
    fake.send_text(forum, alice, "/settings", thread_id=77)
    await fake.wait_for(lambda: len(texts(fake, forum)) == 2, timeout=10)
    assert fake.bot_messages(forum)[1].thread_id == 77


async def test_reply_cut_off_by_a_restart_is_redone(fake: FakeBotAPI, run_bot) -> None:
    hanging = ScriptedEngine(delay=0.05)
    hanging.hang = True
    hanging.enqueue("partial answer")
    runner = await run_bot(hanging, stream_mode="edit")
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "an important question")
    await fake.wait_for(lambda: texts(fake, chat) == ["partial answer"], timeout=10)
    # The message shows before the bot hears back and stores its id: wait for that, then stop
    # (a crash between the two is the one case where a new message is sent instead).
    await turns(runner, until=lambda rows: len(rows) == 2 and rows[1].message_id is not None)
    await runner.stop()  # the reply is cut off mid-way

    rows = await turns(runner)
    assert [(r.role, r.state) for r in rows] == [("user", "pending"), ("assistant", "streaming")]

    fresh = ScriptedEngine()
    fresh.enqueue("the full answer, redone")
    runner2 = await run_bot(fresh, stream_mode="edit")
    await fake.wait_for(lambda: texts(fake, chat) == ["the full answer, redone"], timeout=10)
    assert "an important question" in fresh.prompts()[0]
    rows = await turns(runner2, until=lambda rows: rows[-1].state == "complete")
    assert [(r.role, r.state) for r in rows] == [("user", "answered"), ("assistant", "complete")]
    # The interrupted message was edited, not duplicated.
    assert len(fake.bot_messages(chat)) == 1


async def test_a_reply_cut_off_by_sigkill_is_redone_at_the_next_start(
    fake: FakeBotAPI, run_bot, database_kind: str, database_url: str, tmp_path
) -> None:
    """A real kill, not a clean stop: the first bot runs in a process of its own and gets
    SIGKILL mid-reply (its instance lock and its database connections die with it)."""
    values = {"token": fake.token, "api_url": f"{fake.base_url}/bot", "access": "open",
              "data": str(tmp_path / "data"), "metrics_listen": "", "stream_mode": "edit",
              "edit_interval_private": 0.3}
    if database_kind != "sqlite":
        values["db"] = database_url
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.killedbot", json.dumps(values), "--reply", "partial answer",
        cwd=REPO, stdin=subprocess.DEVNULL,
    )
    try:
        alice = fake.user("Alice")
        chat = fake.private_chat(alice)
        await fake.wait_for(lambda: fake.requests("getUpdates"), timeout=60,
                            what="the bot in its own process to start polling")
        fake.send_text(chat, alice, "an important question")
        await fake.wait_for(lambda: texts(fake, chat) == ["partial answer"], timeout=30)
        # Killed once the message's id is stored (before it, a new message is the one way).
        database = open_database(database_url)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                async with sessions(database)() as session:
                    ids = (await session.execute(select(TurnRow.message_id).where(
                        TurnRow.role == "assistant"))).scalars().all()
                if ids and ids[0] is not None:
                    break
                await asyncio.sleep(0.05)
        finally:
            await database.dispose()
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    fresh = ScriptedEngine()
    fresh.enqueue("the full answer, redone")
    runner = await run_bot(fresh, stream_mode="edit")
    await fake.wait_for(lambda: texts(fake, chat) == ["the full answer, redone"], timeout=20)
    assert "an important question" in fresh.prompts()[0]
    rows = await turns(runner, until=lambda rows: rows[-1].state == "complete")
    assert [(r.role, r.state) for r in rows] == [("user", "answered"), ("assistant", "complete")]
    assert len(fake.bot_messages(chat)) == 1  # the interrupted message was edited


async def test_typing_action_while_the_model_thinks(fake: FakeBotAPI, run_bot) -> None:
    engine = ScriptedEngine(delay=0.05)
    await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "hi")
    await fake.wait_for(lambda: texts(fake, chat), timeout=10)
    actions = fake.requests("sendChatAction")
    assert actions and actions[0].params["action"] == "typing"


async def test_replies_stream_by_editing_at_a_bounded_rate(  # type: ignore[no-untyped-def]
    fake: FakeBotAPI, run_bot, gate_calls: list[GateCall]
) -> None:
    engine = ScriptedEngine(delay=0.02)
    await run_bot(engine, edit_interval_private=0.5, stream_mode="edit")
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    words = [f"token{i}" for i in range(150)]
    engine.enqueue(" ".join(words))
    started = time.monotonic()
    fake.send_text(chat, alice, "count")
    await fake.wait_for(lambda: texts(fake, chat) == [" ".join(words)], timeout=20)
    elapsed = time.monotonic() - started
    calls = [r for r in fake.requests() if r.chat_id == chat["id"]
             and r.method in ("sendMessage", "editMessageText")]
    assert len(calls) >= 3, "the reply should appear progressively"
    # Each call left through the chat's gate 0.5 s after the last, on the bot's own clock (when
    # they arrive also depends on the machine's load).
    spaced = [call for call in gate_calls if call.spaced]
    assert len(spaced) == len(calls)
    gaps = [b.at - a.at for a, b in zip(spaced, spaced[1:], strict=False)]
    assert min(gaps) >= 0.5 - 0.005, gaps
    assert len(calls) <= elapsed / 0.5 + 2
    assert fake.bot_messages(chat)[0].edit_count == len(calls) - 1
    await asyncio.sleep(0)


def test_cli_start_up_errors_are_one_line(fake: FakeBotAPI, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from bot.cli import main

    monkeypatch.setenv("ALPACA_BOT_DATA", str(tmp_path / "cli"))
    monkeypatch.setenv("ALPACA_BOT_API_URL", f"{fake.base_url}/bot")
    monkeypatch.setenv("ALPACA_BOT_TOKEN", "123:not-the-token")
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("alpaca-bot: error: Telegram rejected the bot token") and err.count("\n") == 1
    assert "not-the-token" not in err
    monkeypatch.setenv("ALPACA_BOT_API_URL", "http://127.0.0.1:9/bot")
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("alpaca-bot: error: cannot reach the Telegram Bot API") and err.count("\n") == 1
    monkeypatch.setenv("ALPACA_BOT_API_URL", f"{fake.base_url}/bot")
    monkeypatch.setenv("ALPACA_BOT_TOKEN", fake.token)
    monkeypatch.setenv("ALPACA_BOT_MODEL", str(tmp_path / "missing.gguf"))
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"\nalpaca-bot: error: model file not found: {tmp_path / 'missing.gguf'}\n")


async def test_a_flood_ban_holds_for_every_message_to_the_chat(fake: FakeBotAPI, run_bot) -> None:
    engine = ScriptedEngine(delay=0.02)
    await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.fail_next("sendMessage", 429, retry_after=2, chat_id=chat)
    engine.enqueue("first answer")
    fake.send_text(chat, alice, "question one")
    fake.send_text(chat, alice, "/settings")
    fake.send_text(chat, alice, "/temp")
    # The reply, and both answers: sent together if they waited out the ban together.
    wanted = ("first answer", "Model: scripted", "--temp 0.2 —")
    await fake.wait_for(lambda: all(w in "\n".join(texts(fake, chat)) for w in wanted),
                        timeout=20)
    assert len(texts(fake, chat)) in (2, 3)
    assert fake.violations() == []


async def test_a_waiting_request_shows_its_place_in_the_queue(fake: FakeBotAPI, run_bot) -> None:
    engine = ScriptedEngine(delay=0.1, serial=True)
    await run_bot(engine, stream_mode="edit")
    alice, bob = fake.user("Alice"), fake.user("Bob")
    first, second = fake.private_chat(alice), fake.private_chat(bob)
    engine.enqueue(" ".join(["slow"] * 25), "your turn now")
    fake.send_text(first, alice, "long question")
    await engine.started.wait()
    fake.send_text(second, bob, "short question")
    await fake.wait_for(lambda: texts(fake, second) == ["your turn now"], timeout=20)
    [message] = fake.bot_messages(second)
    assert message.history and message.history[0] == "⏳ 1 ahead of you…"
    assert texts(fake, first) == [" ".join(["slow"] * 25)]


@pytest.mark.log_errors(r"(?s)error while handling an update.*database or disk is full")
async def test_a_full_disk_gets_a_clear_answer_and_the_admins_hear(fake: FakeBotAPI, engine: ScriptedEngine, run_bot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import OperationalError

    boss = fake.user("Boss")
    boss_chat = fake.private_chat(boss)  # the admin has started the bot: it may write to him
    runner = await run_bot(engine, admins=[boss["id"]])
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)

    async def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT INTO turns", {}, Exception("database or disk is full"))

    monkeypatch.setattr(runner.runtime.service.conversation, "accept", full)
    fake.send_text(chat, alice, "hello?")
    await fake.wait_for(lambda: texts(fake, chat), timeout=10)
    assert texts(fake, chat) == [
        "⚠️ The server's disk is full, so I could not store that. Try again later."
    ]
    await fake.wait_for(lambda: fake.bot_messages(boss_chat), timeout=10)
    assert "OperationalError" in fake.bot_messages(boss_chat)[0].text


async def test_command_answer_survives_a_deleted_command(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    await run_bot(engine)
    group = fake.group_chat()
    alice = fake.user("Alice")
    fake.send_text(group, alice, "/help")
    await fake.wait_for(lambda: texts(fake, group), timeout=10)
    assert texts(fake, group)[0].startswith("I answer with a local language model")
    # Quoted, but sent even if the command was deleted before the answer went out.
    parameters = fake.requests("sendMessage")[-1].params["reply_parameters"]
    assert parameters.get("allow_sending_without_reply") is True, parameters


async def test_a_full_queue_answers_busy_and_loses_nothing(fake: FakeBotAPI, run_bot) -> None:
    engine = ScriptedEngine(delay=0.05, max_queue=1)
    engine.hang = True
    runner = await run_bot(engine)
    alice, bob = fake.user("Alice"), fake.user("Bob")
    first, second = fake.private_chat(alice), fake.private_chat(bob)
    engine.enqueue("thinking and thinking")
    fake.send_text(first, alice, "a long question")
    await engine.started.wait()
    fake.send_text(second, bob, "are you there?")
    await fake.wait_for(lambda: any("busy" in text for text in texts(fake, second)), timeout=10)
    # Bob's message is stored, not dropped; once the model is free again, he is answered.
    fake.send_text(first, alice, "/stop")
    await fake.wait_for(lambda: texts(fake, first) and texts(fake, first)[-1].endswith("stopped"),
                        timeout=10)
    engine.hang = False
    engine.enqueue("yes, here")
    fake.send_text(second, bob, "are you there now?")
    await fake.wait_for(lambda: texts(fake, second)[-1] == "yes, here", timeout=10)
    rows = await turns(runner, until=lambda rows: any(row.text == "yes, here" for row in rows))
    assert [row.text for row in rows if row.role == "user"] == [
        "a long question", "are you there?", "are you there now?"]
    assert texts(fake, second)[0] == "The model is busy; try again in a minute."


@pytest.mark.log_errors(r"gave up answering turn \d+ of chat \d+: it was cut off by \d+ restarts")
async def test_a_question_cut_off_at_every_start_is_given_up(fake: FakeBotAPI, run_bot) -> None:
    """An answer that takes the process down (a native abort, memory running out) would be
    begun again at every start, forever: after MAX_REDOS starts it is given up, and the chat
    and the admins hear it."""
    from bot.chat.recovery import MAX_REDOS

    alice = fake.user("Alice")
    admin = fake.user("Admin")
    chat = fake.private_chat(alice)
    admin_chat = fake.private_chat(admin)
    asked = False
    for _start in range(MAX_REDOS + 1):  # the first try, then each redo, all cut off
        hanging = ScriptedEngine(delay=0.05)
        hanging.hang = True
        hanging.enqueue("partial answer")
        runner = await run_bot(hanging, admins=[admin["id"]])
        if not asked:
            fake.send_text(chat, alice, "a question that crashes the bot")
            asked = True
        await fake.wait_for(lambda engine=hanging: len(engine.history) == 1, timeout=10)
        await runner.stop()
    fresh = ScriptedEngine()
    fresh.enqueue("never sent")
    runner = await run_bot(fresh, admins=[admin["id"]])
    await fake.wait_for(lambda: any("gave up" in t for t in texts(fake, chat)), timeout=10)
    await fake.wait_for(lambda: any("given up" in t for t in texts(fake, admin_chat)), timeout=10)
    assert fresh.history == []
    rows = await turns(runner, until=lambda rows: rows[0].state == "failed")
    assert rows[0].state == "failed" and rows[0].redone == MAX_REDOS + 1
