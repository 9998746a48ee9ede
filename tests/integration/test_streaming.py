"""How a reply streams, through the fake Bot API: the first text at once, live drafts in private
chats (refusals remembered, flood bans honoured, a crash mid-draft redone), edits elsewhere."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import select

from bot.store.schema import TurnRow
from tests.botrunner import GateCall
from tests.fakebotapi import ApiRequest, FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

SHOWING = ("sendMessage", "sendMessageDraft", "editMessageText")
CLOCK_SLACK = 0.005
"""Calls leave the bot an interval apart on its own clock (tests/botrunner.py's gate_calls);
only a timer's rounding is allowed for. When they arrive depends on the machine's load."""
FLOOD_SLACK = 0.5
"""How late the first call after a flood ban may arrive (tests/integration/test_bot.py)."""


def shown_to(fake: FakeBotAPI, chat: dict, *methods: str) -> list[ApiRequest]:
    """The successful calls that showed the chat text, in order."""
    return [r for r in fake.requests() if r.chat_id == chat["id"] and r.status == 200
            and r.method in (methods or SHOWING)]


def buttons(message: Any) -> list[str]:
    rows = (message.reply_markup or {}).get("inline_keyboard") or []
    return [button["text"] for row in rows for button in row]


async def stored_turns(runner: Any, until: Any = None, wait: float = 5.0) -> list[TurnRow]:
    from bot.store.database import sessions

    deadline = time.monotonic() + wait
    while True:
        async with sessions(runner.runtime.database)() as session:
            rows = list((await session.execute(select(TurnRow).order_by(TurnRow.id))).scalars())
        if until is None or until(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


def conversation(fake: FakeBotAPI, kind: str) -> tuple[dict, dict, str]:
    """A chat of `kind`, its user, and how that user asks the bot there."""
    alice = fake.user("Alice", "alice")
    if kind == "private":
        return fake.private_chat(alice), alice, ""
    return fake.group_chat("Llamas"), alice, "@alpaca_test_bot "


# -- the first text -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "mode"), [("private", "auto"), ("private", "edit"),
                                            ("group", "auto")])
async def test_the_first_text_shows_at_once_and_edits_keep_the_interval(
    fake: FakeBotAPI, run_bot: Any, gate_calls: list[GateCall], kind: str, mode: str
) -> None:
    engine = ScriptedEngine(delay=0.05)
    held = engine.hold_after_first = asyncio.Event()
    # The configured intervals are the defaults: 1 s in private chats, 3 s in groups.
    await run_bot(engine, stream_mode=mode, edit_interval_private=1.0, edit_interval_group=3.0)
    interval = 3.0 if kind == "group" else 1.0
    chat, alice, prefix = conversation(fake, kind)
    words = [f"w{i}" for i in range(90)]  # 4.5 s of text
    engine.enqueue(" ".join(words))
    fake.send_text(chat, alice, prefix + "tell me a lot")
    # The model holds its second token: the first shows without waiting for more text.
    await fake.wait_for(lambda: shown_to(fake, chat), timeout=10 + interval,
                        what="the first text while the model holds the next")
    [first] = shown_to(fake, chat)
    assert first.method == ("sendMessageDraft" if (kind, mode) == ("private", "auto")
                            else "sendMessage")
    assert first.params["text"] == words[0]
    held.set()
    await fake.wait_for(lambda: texts(fake, chat) == [" ".join(words)], timeout=30)

    # It went out as the token came, not an interval later (timed on the bot's own clock).
    [first_token] = engine.first_text_at
    spaced = [call for call in gate_calls if call.spaced]
    assert spaced[0].at - first_token < interval / 2, spaced[0].at - first_token
    # "typing…" went first and did not hold the text back.
    [typing, *_] = fake.requests("sendChatAction")
    assert typing.at < first.at
    # After the first text, one call per interval at most (each through the chat's gate,
    # which lets it out an interval after the last), and the final text whole.
    shown = shown_to(fake, chat)
    assert len(spaced) == len(shown) and len({call.gate for call in spaced}) == 1
    gaps = [b.at - a.at for a, b in zip(spaced, spaced[1:], strict=False)]
    assert gaps and min(gaps) >= interval - CLOCK_SLACK, gaps
    assert fake.violations() == []


@pytest.mark.parametrize("kind", ["private", "group"])
async def test_a_reply_written_at_once_is_one_message(
    fake: FakeBotAPI, run_bot: Any, kind: str
) -> None:
    engine = ScriptedEngine()  # no delay: the whole reply is there at once
    await run_bot(engine, edit_interval_private=1.0, edit_interval_group=3.0)
    chat, alice, prefix = conversation(fake, kind)
    engine.enqueue("Paris is the capital of France.")
    fake.send_text(chat, alice, prefix + "capital of France?")
    await fake.wait_for(lambda: texts(fake, chat) == ["Paris is the capital of France."],
                        timeout=10)
    [sent] = shown_to(fake, chat)
    assert sent.method == "sendMessage"
    assert sent.at - engine.first_text_at[0] < 0.5  # well before any interval
    [message] = fake.bot_messages(chat)
    assert buttons(message) == ["🔄 Regenerate"] and message.edit_count == 0


# -- live drafts ---------------------------------------------------------------------------------


async def test_a_private_reply_streams_as_one_draft_then_is_sent(
    fake: FakeBotAPI, run_bot: Any, gate_calls: list[GateCall]
) -> None:
    engine = ScriptedEngine(delay=0.02)
    await run_bot(engine)
    chat, alice, _ = conversation(fake, "private")
    words = [f"token{i}" for i in range(80)]
    engine.enqueue(" ".join(words))
    fake.send_text(chat, alice, "count")
    await fake.wait_for(lambda: texts(fake, chat) == [" ".join(words)], timeout=20)
    drafts = fake.drafts(chat)
    assert len(drafts) >= 3, drafts
    assert len({draft_id for draft_id, _ in drafts}) == 1  # one draft, animated
    for (_, earlier), (_, later) in zip(drafts, drafts[1:], strict=False):
        assert later.startswith(earlier) and len(later) > len(earlier)
    assert " ".join(words).startswith(drafts[-1][1])
    assert fake.requests("editMessageText") == []
    calls = shown_to(fake, chat)
    assert [r.method for r in calls] == ["sendMessageDraft"] * len(drafts) + ["sendMessage"]
    spaced = [call for call in gate_calls if call.spaced]
    assert len(spaced) == len(calls)
    gaps = [b.at - a.at for a, b in zip(spaced, spaced[1:], strict=False)]
    assert min(gaps) >= 0.3 - CLOCK_SLACK, gaps
    [message] = fake.bot_messages(chat)
    assert buttons(message) == ["🔄 Regenerate"]


async def test_a_long_draft_continues_in_further_messages(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine(delay=0.001)
    await run_bot(engine, edit_interval_private=0.2)
    chat, alice, _ = conversation(fake, "private")
    paragraph = " ".join(f"word{i} & <tag>" for i in range(600))  # ~9000 characters
    engine.enqueue(paragraph)
    fake.send_text(chat, alice, "/n 1900")
    fake.send_text(chat, alice, "write a lot")
    await fake.wait_for(lambda: " ".join(texts(fake, chat)[1:]) == paragraph, timeout=30)
    replies = fake.bot_messages(chat)[1:]
    assert len(replies) == 3 and all(len(m.text) <= 4096 for m in replies)
    assert buttons(replies[-1]) == ["🔄 Regenerate"] and buttons(replies[0]) == []
    # Each message of the reply had its own draft; no draft was over Telegram's limit.
    assert len({draft_id for draft_id, _ in fake.drafts(chat)}) >= 2
    assert all(len(text) <= 4096 for _, text in fake.drafts(chat))


async def test_groups_and_stream_mode_edit_never_draft(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine(delay=0.02)
    await run_bot(engine, stream_mode="edit")
    chat, alice, _ = conversation(fake, "private")
    engine.enqueue(" ".join(["word"] * 40))
    fake.send_text(chat, alice, "hi")
    await fake.wait_for(lambda: texts(fake, chat) == [" ".join(["word"] * 40)], timeout=20)
    assert fake.requests("sendMessageDraft") == []
    assert fake.requests("editMessageText")


async def test_a_refused_draft_falls_back_to_edits_and_is_remembered(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    engine = ScriptedEngine(delay=0.02)
    runner = await run_bot(engine)
    chat, alice, _ = conversation(fake, "private")
    bob = fake.user("Bob")
    other = fake.private_chat(bob)
    fake.fail_next("sendMessageDraft", 400, "Bad Request: TEXTDRAFT_PEER_INVALID", chat_id=chat)
    long = " ".join(f"w{i}" for i in range(40))
    engine.enqueue(long, "second", "for Bob")
    fake.send_text(chat, alice, "first question")
    await fake.wait_for(lambda: texts(fake, chat) == [long], timeout=20)
    assert len(fake.requests("sendMessageDraft")) == 1  # the refused one; then edits
    assert fake.bot_messages(chat)[0].edit_count >= 1
    fake.send_text(chat, alice, "second question")
    await fake.wait_for(lambda: texts(fake, chat)[-1:] == ["second"], timeout=10)
    assert len(fake.requests("sendMessageDraft")) == 1
    fake.send_text(other, bob, "hello")  # another chat is not affected
    await fake.wait_for(lambda: texts(fake, other) == ["for Bob"], timeout=10)
    await runner.stop()

    again = ScriptedEngine(delay=0.02)
    again.enqueue(long)
    await run_bot(again)
    before = len(fake.requests("sendMessageDraft"))
    fake.send_text(chat, alice, "after a restart")
    await fake.wait_for(lambda: texts(fake, chat)[-1:] == [long], timeout=20)
    assert len(fake.requests("sendMessageDraft")) == before  # remembered in the store


async def test_stream_mode_draft_tries_a_group_once(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine(delay=0.02)
    await run_bot(engine, stream_mode="draft")
    group, alice, prefix = conversation(fake, "group")
    engine.enqueue("one two three four five six", "seven eight")
    fake.send_text(group, alice, prefix + "count")
    await fake.wait_for(lambda: texts(fake, group) == ["one two three four five six"], timeout=10)
    [refused] = fake.requests("sendMessageDraft")
    assert refused.status == 400 and "TEXTDRAFT_PEER_INVALID" in (refused.description or "")
    fake.send_text(group, alice, prefix + "more")
    await fake.wait_for(lambda: texts(fake, group)[-1:] == ["seven eight"], timeout=10)
    assert len(fake.requests("sendMessageDraft")) == 1


async def test_a_bot_api_server_without_drafts_turns_them_off_for_the_run(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    engine = ScriptedEngine(delay=0.02)
    await run_bot(engine)
    chat, alice, _ = conversation(fake, "private")
    bob = fake.user("Bob")
    other = fake.private_chat(bob)
    fake.fail_next("sendMessageDraft", 404, "Not Found")
    engine.enqueue("one two three four", "five six")
    fake.send_text(chat, alice, "hi")
    await fake.wait_for(lambda: texts(fake, chat) == ["one two three four"], timeout=10)
    fake.send_text(other, bob, "hi")
    await fake.wait_for(lambda: texts(fake, other) == ["five six"], timeout=10)
    assert len(fake.requests("sendMessageDraft")) == 1


async def test_a_flood_ban_on_a_draft_is_waited_out_exactly(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine(delay=0.05)
    await run_bot(engine)
    chat, alice, _ = conversation(fake, "private")
    words = " ".join(f"w{i}" for i in range(60))
    engine.enqueue(words)
    fake.fail_next("sendMessageDraft", 429, retry_after=2, chat_id=chat)
    fake.send_text(chat, alice, "stream please")
    await fake.wait_for(lambda: texts(fake, chat) == [words], timeout=20)
    assert fake.violations() == []
    [rejected] = [r for r in fake.requests("sendMessageDraft") if r.status == 429]
    later = [r for r in fake.requests() if r.chat_id == chat["id"] and r.at > rejected.at]
    assert later and 2.0 <= later[0].at - rejected.at <= 2.0 + FLOOD_SLACK
    assert len(fake.bot_messages(chat)) == 1  # never resent as a new message


async def test_a_reply_cut_off_mid_draft_is_written_after_a_restart(
    fake: FakeBotAPI, run_bot: Any
) -> None:
    hanging = ScriptedEngine(delay=0.05)
    hanging.hang = True
    hanging.enqueue("partial answer")
    runner = await run_bot(hanging)
    chat, alice, _ = conversation(fake, "private")
    fake.send_text(chat, alice, "an important question")
    await fake.wait_for(lambda: ("partial answer" in [t for _, t in fake.drafts(chat)]),
                        timeout=10)
    await runner.stop()  # the draft vanishes with the bot; no message holds the reply
    assert fake.bot_messages(chat) == []
    rows = await stored_turns(runner)
    assert [(r.role, r.state) for r in rows] == [("user", "pending"), ("assistant", "streaming")]

    fresh = ScriptedEngine()
    fresh.enqueue("the full answer, redone")
    runner2 = await run_bot(fresh)
    await fake.wait_for(lambda: texts(fake, chat) == ["the full answer, redone"], timeout=10)
    rows = await stored_turns(runner2, until=lambda rows: rows[-1].delivered)
    assert [(r.role, r.state, r.delivered) for r in rows] == [
        ("user", "answered", True), ("assistant", "complete", True)]
    assert rows[-1].message_id == fake.bot_messages(chat)[0].message_id
    await asyncio.sleep(0.3)
    assert len(fake.bot_messages(chat)) == 1


async def test_a_waiting_draft_shows_its_place_and_is_kept_alive(
    fake: FakeBotAPI, run_bot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.telegram.reply_messages.DRAFT_REFRESH", 0.4)
    engine = ScriptedEngine(delay=0.1, serial=True)
    await run_bot(engine)
    alice, bob = fake.user("Alice"), fake.user("Bob")
    first, second = fake.private_chat(alice), fake.private_chat(bob)
    engine.enqueue(" ".join(["slow"] * 25), "your turn now")
    fake.send_text(first, alice, "long question")
    await engine.started.wait()
    fake.send_text(second, bob, "short question")
    await fake.wait_for(lambda: texts(fake, second) == ["your turn now"], timeout=20)
    waiting = [text for _, text in fake.drafts(second) if text == "⏳ 1 ahead of you…"]
    assert len(waiting) >= 2, fake.drafts(second)  # sent again before Telegram drops it
