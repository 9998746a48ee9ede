"""Who may use the bot, through the fake Bot API: a stranger in private (one answer, one notice,
Approve, then answered), Deny, groups added by a stranger and by an admin, the admin commands,
the log line of the first run, and `alpaca-bot access`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.chat.commands import MANAGE_ACCESS
from bot.store.schema import AccessRequestRow, AccessRow, TurnRow
from bot.telegram.access_notices import APPROVED_GROUP, APPROVED_USER
from bot.telegram.gate import PRIVATE_ASKED, PRIVATE_ONLY
from bot.telegram.membership import GROUP_ASKED, GROUP_LEAVING
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]
APPROVE, DENY = "✅ Approve", "🚫 Deny"
MENTION = "@alpaca_test_bot "


def buttons(message: Any) -> list[str]:
    rows = (message.reply_markup or {}).get("inline_keyboard") or []
    return [button["text"] for row in rows for button in row]


async def rows(runner: Any, table: Any) -> list[Any]:
    from bot.store.database import sessions

    async with sessions(runner.runtime.database)() as session:
        return list((await session.execute(select(table))).scalars())


async def turn_count(runner: Any) -> int:
    from bot.store.database import sessions

    async with sessions(runner.runtime.database)() as session:
        return int(await session.scalar(select(func.count(TurnRow.id))) or 0)


async def quiet(fake: FakeBotAPI, seconds: float = 0.8) -> None:
    """Let the bot handle what was sent (the updates are taken within this time)."""
    await fake.wait_for(lambda: not fake.pending_updates(), timeout=10, what="updates taken")
    await asyncio.sleep(seconds)


async def test_a_stranger_is_answered_once_the_admins_asked_once_then_approved(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    owner = fake.user("Olga", "olga")
    owner_chat = fake.private_chat(owner)
    runner = await run_bot(engine, access="pairing", admins=[owner["id"]])
    stranger = fake.user("Sam", "sam", language_code="de")
    chat = fake.private_chat(stranger)
    fake.send_text(chat, stranger, "Hello! " + "x" * 300)
    await fake.wait_for(lambda: texts(fake, chat) and texts(fake, owner_chat), timeout=10)
    assert texts(fake, chat) == [PRIVATE_ASKED]
    notice = fake.bot_messages(owner_chat)[0]
    assert f"Sam (@sam, {stranger['id']})" in notice.text and "de" in notice.text
    assert ("Hello! " + "x" * 193) in notice.text and "x" * 194 not in notice.text
    assert buttons(notice) == [APPROVE, DENY]
    # More messages: no answer for an hour, no second notice; nothing reaches the model.
    fake.send_text(chat, stranger, "anyone?")
    fake.send_text(chat, stranger, "/help")
    await quiet(fake)
    assert texts(fake, chat) == [PRIVATE_ASKED] and len(texts(fake, owner_chat)) == 1
    assert engine.history == [] and await turn_count(runner) == 0
    [request] = await rows(runner, AccessRequestRow)
    assert (request.id, request.name, request.username) == (stranger["id"], "Sam", "sam")
    assert len(request.preview) == 200

    fake.press(notice, APPROVE, owner)
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=10)
    assert texts(fake, chat)[1] == APPROVED_USER
    edited = await fake.wait_for(
        lambda: [m for m in fake.bot_messages(owner_chat) if m.edit_count], timeout=10)
    assert buttons(edited[0]) == [] and "may use the bot now" in edited[0].text
    assert all(query.answered for query in fake.callback_queries())
    engine.enqueue("Welcome, Sam.")
    fake.send_text(chat, stranger, "What is a llama?")
    await fake.wait_for(lambda: texts(fake, chat)[-1] == "Welcome, Sam.", timeout=10)
    assert await rows(runner, AccessRequestRow) == []
    [decision] = await rows(runner, AccessRow)
    assert (decision.id, decision.allowed, decision.decided_by) == (
        stranger["id"], True, owner["id"])


async def test_deny_keeps_a_stranger_out_and_only_admins_may_press(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    owner = fake.user("Olga", "olga")
    owner_chat = fake.private_chat(owner)
    runner = await run_bot(engine, access="pairing", admins=[owner["id"]])
    stranger = fake.user("Eve", "eve")
    chat = fake.private_chat(stranger)
    fake.send_text(chat, stranger, "let me in")
    notice = await fake.wait_for(lambda: fake.bot_messages(owner_chat), timeout=10)
    # The stranger cannot approve themselves with the notice's data.
    forged = fake.push_callback(notice[0], f"ac:a:{stranger['id']}", stranger)
    await fake.wait_for(lambda: fake.callback_query(forged).answered, timeout=10)
    assert "admins" in (fake.callback_query(forged).text or "")
    fake.press(notice[0], DENY, owner)
    await fake.wait_for(lambda: "may no longer use" in fake.bot_messages(owner_chat)[0].text,
                        timeout=10)
    [decision] = await rows(runner, AccessRow)
    assert (decision.id, decision.allowed) == (stranger["id"], False)
    fake.send_text(chat, stranger, "please?")
    await quiet(fake)
    assert texts(fake, chat) == [PRIVATE_ASKED]  # the next answer comes in an hour at most
    assert engine.history == [] and len(texts(fake, owner_chat)) == 1


async def test_a_group_added_by_a_stranger_waits_silently_and_is_left_on_deny(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    owner = fake.user("Olga", "olga")
    owner_chat = fake.private_chat(owner)
    await run_bot(engine, access="pairing", admins=[owner["id"]])
    stranger = fake.user("Mallory", "mallory")
    group = fake.group_chat("Strangers")
    fake.add_bot(group, stranger)
    await fake.wait_for(lambda: texts(fake, group) and texts(fake, owner_chat), timeout=10)
    assert texts(fake, group) == [GROUP_ASKED]
    notice = fake.bot_messages(owner_chat)[0]
    assert "Mallory (@mallory" in notice.text and "Strangers" in notice.text
    assert buttons(notice) == [APPROVE, DENY]
    fake.send_text(group, stranger, MENTION + "answer me")
    fake.send_text(group, stranger, "/ask hello?")
    await quiet(fake)
    assert texts(fake, group) == [GROUP_ASKED] and engine.history == []
    assert len(texts(fake, owner_chat)) == 1
    fake.press(notice, DENY, owner)
    await fake.wait_for(lambda: not fake.bot_in(group), timeout=10, what="the bot to leave")
    assert [r.method for r in fake.requests("leaveChat")] == ["leaveChat"]


async def test_a_group_approved_by_an_admin_is_served(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    owner = fake.user("Olga", "olga")
    owner_chat = fake.private_chat(owner)
    await run_bot(engine, access="pairing", admins=[owner["id"]])
    member = fake.user("Mia", "mia")
    group = fake.group_chat("Friends")
    fake.add_bot(group, member)
    notice = (await fake.wait_for(lambda: fake.bot_messages(owner_chat), timeout=10))[0]
    fake.press(notice, APPROVE, owner)
    await fake.wait_for(lambda: APPROVED_GROUP in texts(fake, group), timeout=10)
    engine.enqueue("Hi Mia!")
    fake.send_text(group, member, MENTION + "hello")
    await fake.wait_for(lambda: texts(fake, group)[-1] == "Hi Mia!", timeout=10)


async def test_a_group_added_by_an_admin_is_served_at_once(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    owner = fake.user("Olga", "olga")
    owner_chat = fake.private_chat(owner)
    runner = await run_bot(engine, access="pairing", admins=[owner["id"]])
    group = fake.group_chat("Family")
    fake.add_bot(group, owner, status="administrator")
    await quiet(fake)
    assert texts(fake, group) == [] and texts(fake, owner_chat) == []
    [decision] = await rows(runner, AccessRow)
    assert (decision.id, decision.allowed, decision.name) == (group["id"], True, "Family")
    cousin = fake.user("Carl", "carl")
    engine.enqueue("Hello Carl.")
    fake.send_text(group, cousin, MENTION + "hi")
    await fake.wait_for(lambda: texts(fake, group) == ["Hello Carl."], timeout=10)


async def test_allowlist_answers_a_stranger_once_and_asks_nobody(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    owner = fake.user("Olga", "olga")
    owner_chat = fake.private_chat(owner)
    runner = await run_bot(engine, access="allowlist", admins=[owner["id"]])
    stranger = fake.user("Sam", "sam", language_code="zh-hans")
    chat = fake.private_chat(stranger)
    fake.send_text(chat, stranger, "你好")
    fake.send_text(chat, stranger, "在吗？")
    await quiet(fake)
    assert len(texts(fake, chat)) == 1 and texts(fake, chat)[0].startswith("🔒")
    assert texts(fake, chat)[0] != PRIVATE_ONLY  # in the stranger's language
    assert texts(fake, owner_chat) == [] and await rows(runner, AccessRequestRow) == []
    group = fake.group_chat("Elsewhere")
    fake.add_bot(group, stranger)
    await fake.wait_for(lambda: not fake.bot_in(group), timeout=10, what="the bot to leave")
    assert len(texts(fake, group)) == 1 and texts(fake, group)[0] != GROUP_LEAVING


async def test_allow_deny_and_access_are_for_bot_admins(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    owner = fake.user("Olga", "olga")
    friend = fake.user("Fred", "fred")
    owner_chat, friend_chat = fake.private_chat(owner), fake.private_chat(friend)
    await run_bot(engine, access="pairing", admins=[owner["id"]], allow=[friend["id"]])
    stranger = fake.user("Sam", "sam")
    stranger_chat = fake.private_chat(stranger)
    fake.send_text(friend_chat, friend, f"/allow {stranger['id']}")
    fake.send_text(friend_chat, friend, f"/deny {owner['id']}")
    fake.send_text(friend_chat, friend, "/access")
    await fake.wait_for(lambda: len(texts(fake, friend_chat)) == 3, timeout=10)
    assert texts(fake, friend_chat) == [MANAGE_ACCESS] * 3
    fake.send_text(stranger_chat, stranger, f"/allow {stranger['id']}")
    await fake.wait_for(lambda: texts(fake, stranger_chat), timeout=10)
    assert texts(fake, stranger_chat) == [PRIVATE_ASKED]

    group = fake.group_chat("Club")
    fake.send_text(owner_chat, owner, f"/allow {stranger['id']}")
    fake.send_text(owner_chat, owner, f"/allow {group['id']}")
    fake.send_text(owner_chat, owner, f"/deny {friend['id']}")
    fake.send_text(owner_chat, owner, "/allow nobody")
    await fake.wait_for(lambda: len(texts(fake, owner_chat)) >= 5, timeout=10)
    answers = texts(fake, owner_chat)[-4:]
    assert f"Sam ({stranger['id']})" in answers[0]
    assert "may use the bot now" in answers[0] and "may use the bot now" in answers[1]
    assert "configuration" in answers[2] and answers[3].startswith("Usage: /allow ID")
    assert APPROVED_USER in texts(fake, stranger_chat)  # their request was waiting
    fake.send_text(owner_chat, owner, "/access")
    await fake.wait_for(lambda: texts(fake, owner_chat)[-1].startswith("Access: pairing"),
                        timeout=10)
    listing = texts(fake, owner_chat)[-1]
    assert str(stranger["id"]) in listing and str(group["id"]) in listing
    assert str(friend["id"]) in listing  # allowed by the configuration
    engine.enqueue("Now I answer you.")
    fake.send_text(stranger_chat, stranger, "hello")
    await fake.wait_for(lambda: texts(fake, stranger_chat)[-1] == "Now I answer you.", timeout=10)
    fake.send_text(owner_chat, owner, f"/deny {group['id']}")
    await fake.wait_for(lambda: not fake.bot_in(group), timeout=10, what="the bot to leave")


async def test_with_no_admin_the_request_is_logged_with_the_command(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, caplog: pytest.LogCaptureFixture,
    bot_settings: Any,
) -> None:
    from bot.cli import main

    caplog.set_level(logging.INFO)
    runner = await run_bot(engine, access="pairing")
    owner = fake.user("Olga", "olga")
    chat = fake.private_chat(owner)
    fake.send_text(chat, owner, "it's me")
    await fake.wait_for(lambda: texts(fake, chat) == [PRIVATE_ASKED], timeout=10)
    command = f"alpaca-bot access allow {owner['id']}"
    await fake.wait_for(lambda: any(command in r.getMessage() for r in caplog.records),
                        timeout=10, what=f"the log to say {command}")
    # The owner lets themselves in from the terminal, while the bot runs.
    settings = runner.settings
    environment = {"ALPACA_BOT_DATA": str(settings.data)}
    if settings.db:
        environment["ALPACA_BOT_DB"] = settings.db
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environment.items():
            patch.setenv(key, value)
        assert await asyncio.to_thread(main, ["access", "allow", str(owner["id"])]) == 0
        assert await asyncio.to_thread(main, ["access", "list"]) == 0
    engine.enqueue("Hello, owner.")
    fake.send_text(chat, owner, "now?")
    await fake.wait_for(lambda: texts(fake, chat)[-1] == "Hello, owner.", timeout=10)


def test_the_cli_allows_lists_and_denies(make_settings: Any, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.cli import main

    settings = make_settings(admins=[5])
    monkeypatch.setenv("ALPACA_BOT_DATA", str(settings.data))
    monkeypatch.setenv("ALPACA_BOT_ADMINS", "5")
    if settings.db:
        monkeypatch.setenv("ALPACA_BOT_DB", settings.db)
    assert main(["access", "allow", "1234"]) == 0
    assert main(["access", "allow", "-1001234"]) == 0
    assert main(["access", "deny", "1234"]) == 0
    assert main(["access", "deny", "5"]) == 0
    assert main(["access", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "✅ 1234 may use the bot now."
    assert out[1] == "✅ -1001234 may use the bot now."
    assert out[2] == "🚫 1234 may no longer use the bot."
    assert "configuration" in out[3]
    listing = "\n".join(out[4:])
    assert "Access: pairing" in listing and "Allowed chats: -1001234" in listing
    assert "Denied: 1234" in listing and "Allowed by the configuration: 5" in listing


async def test_an_old_database_keeps_its_chats_and_people(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, database_url: str
) -> None:
    """A database made before access control (migration 0006): its chats, and the people who
    asked in them, are served after the upgrade; a newcomer is not."""
    from bot.store.database import migrate_async
    from tests.integration.test_migrations import run_sql

    old_friend = fake.user("Alice", "alice", id=4242)
    group_member = fake.user("Bob", "bob", id=4343)
    await migrate_async(database_url, "0006")
    await run_sql(
        database_url,
        "insert into chats (id, kind, title, window_start, created_at, updated_at) values "
        "(4242, 'private', 'Alice', 0, '2026-11-01', '2026-11-01'), "
        "(-1001777, 'supergroup', 'Old group', 0, '2026-11-01', '2026-11-01')",
    )
    await run_sql(
        database_url,
        "insert into turns (chat_id, role, state, text, speaker, user_id, delivered, created_at) "
        "values (-1001777, 'user', 'answered', 'hi', 'Bob', 4343, true, '2026-11-01')",
    )
    runner = await run_bot(engine, access="pairing")
    decisions = {row.id: (row.kind, row.allowed) for row in await rows(runner, AccessRow)}
    assert decisions == {4242: ("user", True), -1001777: ("chat", True), 4343: ("user", True)}
    alice_chat = fake.private_chat(old_friend)
    engine.enqueue("Welcome back, Alice.")
    fake.send_text(alice_chat, old_friend, "hello again")
    await fake.wait_for(lambda: texts(fake, alice_chat) == ["Welcome back, Alice."], timeout=10)
    bob_chat = fake.private_chat(group_member)
    engine.enqueue("Hello Bob.")
    fake.send_text(bob_chat, group_member, "me too?")
    await fake.wait_for(lambda: texts(fake, bob_chat) == ["Hello Bob."], timeout=10)
    newcomer = fake.user("Nina", "nina")
    newcomer_chat = fake.private_chat(newcomer)
    fake.send_text(newcomer_chat, newcomer, "and me?")
    await fake.wait_for(lambda: texts(fake, newcomer_chat) == [PRIVATE_ASKED], timeout=10)


async def test_a_group_nobody_answered_about_is_left_after_a_day_and_requests_expire(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from bot.store.database import sessions
    from bot.store.schema import utcnow
    from bot.telegram import membership

    monkeypatch.setattr(membership, "SWEEP_EVERY", 0.2)
    owner = fake.user("Olga", "olga")
    owner_chat = fake.private_chat(owner)
    runner = await run_bot(engine, access="pairing", admins=[owner["id"]])
    stranger = fake.user("Mallory", "mallory")
    group = fake.group_chat("Forgotten")
    fake.add_bot(group, stranger)
    chat = fake.private_chat(stranger)
    fake.send_text(chat, stranger, "me too")
    await fake.wait_for(lambda: len(texts(fake, owner_chat)) == 2, timeout=10)
    await quiet(fake)
    assert fake.bot_in(group)  # a day has not passed
    assert {row.id for row in await rows(runner, AccessRequestRow)} == {group["id"], stranger["id"]}
    async with sessions(runner.runtime.database)() as session:
        for some_id, age in ((group["id"], timedelta(hours=25)), (stranger["id"], timedelta(days=31))):
            await session.execute(update(AccessRequestRow).where(AccessRequestRow.id == some_id)
                                  .values(created_at=utcnow() - age))
        await session.commit()
    await fake.wait_for(lambda: not fake.bot_in(group), timeout=10, what="the bot to leave")
    for _ in range(100):
        if not await rows(runner, AccessRequestRow):
            break
        await asyncio.sleep(0.05)
    assert await rows(runner, AccessRequestRow) == []


async def test_when_no_admin_can_be_reached_the_request_is_logged_with_the_command(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await run_bot(engine, access="pairing", admins=[777000111])  # never wrote to the bot
    stranger = fake.user("Sam", "sam")
    chat = fake.private_chat(stranger)
    fake.send_text(chat, stranger, "hello")
    command = f"alpaca-bot access allow {stranger['id']}"
    await fake.wait_for(lambda: any(command in r.getMessage() for r in caplog.records),
                        timeout=10, what=f"the log to say {command}")
    assert texts(fake, chat) == [PRIVATE_ASKED]
