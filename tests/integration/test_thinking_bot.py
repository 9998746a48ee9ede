"""A thinking model through the whole bot: the fake Bot API on loopback, real SQLite, the
scripted engine writing `<think> ... </think>` before its answer. The answer alone is the reply,
what is stored as its text and what the next prompt holds; /reasoning hide|show|off and
/reasoning_budget are knobs of every chat."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from bot.chat.export import export_chat
from bot.store.database import sessions
from bot.store.schema import TurnRow
from tests.fakebotapi import FakeBotAPI
from tests.fakeengine import ScriptedEngine
from tests.integration.test_bot import texts, turns

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

THOUGHT = "The user asks about France. Its capital is Paris, I am sure."
SCRIPT = f"<think>{THOUGHT}</think>\n\nParis is the capital of France."
ANSWER = "Paris is the capital of France."
REPLY = "Hello from the scripted model."
"""What the scripted engine writes when nothing was enqueued."""

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN3_LIKE = CHATML[: -len("{% endif %}")] + (
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% endif %}{% endif %}"
)
OPENS_BLOCK = CHATML[: -len("{% endif %}")] + "<think>\n{% endif %}"


async def test_hidden_thinking_shows_a_status_and_only_the_answer_is_kept(
    fake: FakeBotAPI, run_bot
) -> None:  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(delay=0.08)
    runner = await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue(SCRIPT)
    fake.send_text(chat, alice, "What is the capital of France?")
    await fake.wait_for(lambda: texts(fake, chat) == [ANSWER], timeout=20)
    # While it thought, the draft said so (with the seconds), never what it thought.
    drafts = [text for _id, text in fake.drafts(chat)]
    assert any("thinking…" in text and " s" in text for text in drafts), drafts
    assert not any("capital is Paris, I am" in text or "<think>" in text for text in drafts)
    rows = await turns(runner, until=lambda rows: len(rows) == 2 and rows[1].delivered)
    assert (rows[1].text, rows[1].thinking) == (ANSWER, THOUGHT)
    # The next turn's prompt holds the answer and none of the thinking.
    engine.enqueue("About two million.")
    fake.send_text(chat, alice, "How many people live there?")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=20)
    assert ANSWER in engine.prompts()[1] and "I am sure" not in engine.prompts()[1]
    registry = runner.runtime.service.metrics.registry
    assert registry.get_sample_value("alpaca_bot_thinking_tokens_total") == len(THOUGHT.split())
    exported = [json.loads(line) for line in (await export_chat(
        sessions(runner.runtime.database), chat["id"], "jsonl")).splitlines()]
    assert [record["thinking"] for record in exported][:2] == [None, THOUGHT]
    markdown = await export_chat(sessions(runner.runtime.database), chat["id"], "md")
    assert f"> *thinking:* {THOUGHT}" in markdown


async def test_shown_thinking_is_an_expandable_quote_above_the_answer(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:  # type: ignore[no-untyped-def]
    boss = fake.user("Boss")
    await run_bot(engine, admins=[boss["id"]])
    group = fake.group_chat()
    fake.send_text(group, boss, "/reasoning")
    await fake.wait_for(lambda: texts(fake, group), timeout=10)
    assert texts(fake, group)[-1].startswith("--reasoning hide — ")
    assert "One of hide|show|off, default hide" in texts(fake, group)[-1]
    fake.send_text(group, boss, "/reasoning show")
    await fake.wait_for(lambda: len(texts(fake, group)) == 2, timeout=10)
    assert texts(fake, group)[-1] == "--reasoning set to show for this chat."
    engine.enqueue(SCRIPT)
    fake.send_text(group, boss, "@alpaca_test_bot capital of France?")
    await fake.wait_for(lambda: len(texts(fake, group)) == 3 and ANSWER in texts(fake, group)[-1],
                        timeout=20)
    reply = fake.bot_messages(group)[-1]
    assert reply.text == f"{THOUGHT}\n{ANSWER}"
    quotes = [e for e in reply.entities if e["type"] == "expandable_blockquote"]
    assert [(q["offset"], q["length"]) for q in quotes] == [(0, len(THOUGHT))]
    fake.send_text(group, boss, "/reasoning loud")
    await fake.wait_for(lambda: len(texts(fake, group)) == 4, timeout=10)
    assert texts(fake, group)[-1] == (
        "'loud' is not a valid value. Usage: /reasoning hide|show|off: a thinking model's "
        "thinking: hide shows only that it thinks, show shows it above the answer, off asks the "
        "model not to think")


async def test_long_shown_thinking_is_split_within_telegram_s_limit(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:  # type: ignore[no-untyped-def]
    await run_bot(engine, reasoning_display="show", reasoning_budget=-1)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    thought = " ".join(f"step{i} & <b>" for i in range(700))  # ~9000 characters
    engine.enqueue(f"<think>{thought}</think> Done.")
    fake.send_text(chat, alice, "/n 50")
    fake.send_text(chat, alice, "think hard")
    await fake.wait_for(lambda: texts(fake, chat)[-1:] and texts(fake, chat)[-1].endswith(
        "Done."), timeout=30)
    replies = fake.bot_messages(chat)[1:]
    assert len(replies) == 3 and all(len(m.text) <= 4096 for m in replies)
    assert all(any(e["type"] == "expandable_blockquote" for e in m.entities) for m in replies)
    assert " ".join(m.text for m in replies).replace("\n", " ") == f"{thought} Done."
    assert fake.violations() == []


async def test_the_budget_closes_the_thinking_and_the_model_answers(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:  # type: ignore[no-untyped-def]
    runner = await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "/reasoning_budget 3")
    await fake.wait_for(lambda: texts(fake, chat), timeout=10)
    assert texts(fake, chat)[-1] == "--reasoning-budget set to 3 for this chat."
    engine.enqueue(f"<think>{THOUGHT}</think>Short answer.")
    fake.send_text(chat, alice, "/n 2")
    fake.send_text(chat, alice, "quick?")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 3, timeout=20)
    assert texts(fake, chat)[-1] == "Short answer."  # -n 2: the answer's words alone
    request = engine.history[-1]
    assert request.thinking is not None and request.thinking.budget == 3
    rows = await turns(runner, until=lambda rows: len(rows) == 2 and rows[-1].delivered)
    assert rows[-1].thinking == "The user asks"
    assert rows[-1].stop_reason == "eos"


async def test_off_asks_the_template_not_to_think_and_the_setting_does_for_every_chat(
    fake: FakeBotAPI, run_bot
) -> None:  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(chat_template=QWEN3_LIKE)
    runner = await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "hello")
    await fake.wait_for(lambda: texts(fake, chat), timeout=10)
    assert engine.prompts()[0].endswith("<|im_start|>assistant\n")
    fake.send_text(chat, alice, "/reasoning off")
    fake.send_text(chat, alice, "hello again")
    # The reply is sent before the restart (one cut off would be answered again after it).
    await fake.wait_for(lambda: texts(fake, chat).count(REPLY) == 2, timeout=10)
    assert engine.prompts()[1].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert engine.history[1].thinking is not None and engine.history[1].thinking.quiet
    await runner.stop()

    everywhere = ScriptedEngine(chat_template=QWEN3_LIKE)
    await run_bot(everywhere, reasoning="off")
    bob = fake.user("Bob")
    bobs = fake.private_chat(bob)
    fake.send_text(bobs, bob, "hi")
    await fake.wait_for(lambda: texts(fake, bobs) == [REPLY], timeout=10)
    # Bob's question, the only one: Alice's was answered before the restart.
    assert len(everywhere.history) == 1 and "hello" not in everywhere.prompts()[0]
    assert everywhere.prompts()[0].endswith("<think>\n\n</think>\n\n")
    assert everywhere.history[0].thinking is not None and everywhere.history[0].thinking.quiet


async def test_a_block_the_prompt_opens_is_thinking_from_the_first_word(
    fake: FakeBotAPI, run_bot
) -> None:  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(chat_template=OPENS_BLOCK)
    runner = await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue(f"{THOUGHT}</think>{ANSWER}")
    fake.send_text(chat, alice, "capital?")
    await fake.wait_for(lambda: texts(fake, chat) == [ANSWER], timeout=20)
    assert engine.history[0].thinking is not None and engine.history[0].thinking.opened
    async with sessions(runner.runtime.database)() as session:
        reply = (await session.execute(
            select(TurnRow).where(TurnRow.role == "assistant"))).scalars().one()
        assert reply.thinking == THOUGHT
    # The window left room for the thinking besides /n: /settings counts it as the model's.
    fake.send_text(chat, alice, "/settings")
    await fake.wait_for(lambda: texts(fake, chat)[-1].startswith("Model:"), timeout=10)
    assert "/reasoning (--reasoning) = hide" in texts(fake, chat)[-1]
    assert "/reasoning_budget (--reasoning-budget) = 1024" in texts(fake, chat)[-1]
