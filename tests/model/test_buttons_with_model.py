"""Continue and Regenerate with the real demo model on the pool engine, through the fake Bot
API: the model goes on with its own reply (left open in the prompt) and writes a new one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.engine.pool import PoolEngine, PoolOptions
from bot.store.database import sessions
from bot.store.schema import TurnRow
from tests.cpu import THREADS
from tests.fakebotapi import FakeBotAPI

pytestmark = [
    pytest.mark.model,
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


def buttons(message: Any) -> list[str]:
    rows = (message.reply_markup or {}).get("inline_keyboard") or []
    return [button["text"] for row in rows for button in row]


async def stored_reply(runner: Any, until: Any) -> TurnRow:
    for _ in range(300):
        async with sessions(runner.runtime.database)() as session:
            query = select(TurnRow).where(TurnRow.role == "assistant")
            rows = list((await session.execute(query)).scalars())
        if len(rows) == 1 and rows[0].delivered and until(rows[0]):
            return rows[0]
        await asyncio.sleep(0.1)
    raise AssertionError("the reply was not stored and delivered")


# Slow by nature: the real model writes a reply, continues it and writes it again, with the saved
# slot state restored between.
async def test_continue_and_regenerate_with_the_real_model(
    fake: FakeBotAPI, run_bot: Any, demo_model: Path, tmp_path: Path
) -> None:
    engine = PoolEngine(PoolOptions(
        model_path=demo_model, n_ctx=1024, n_slots=1, threads=THREADS, state_dir=tmp_path / "state",
    ))
    try:
        runner = await run_bot(engine, seed=7, n_predict=12, ctx=1024, max_ctx=1024,
                               temp=0.7, edit_interval_private=0.2)
        alice = fake.user("Alice")
        chat = fake.private_chat(alice)
        fake.send_text(chat, alice, "Tell me a long story about a llama who learns to sing.")
        first = await stored_reply(runner, lambda row: row.stop_reason == "length")
        [message] = fake.bot_messages(chat)
        assert message.text == first.text and buttons(message) == ["🔄 Regenerate", "➡ Continue"]

        fake.press(message, "➡ Continue", alice)
        longer = await stored_reply(runner, lambda row: row.n_tokens > first.n_tokens)
        assert longer.text.startswith(first.text) and len(longer.text) > len(first.text)
        assert longer.n_tokens == first.n_tokens + 12 or longer.stop_reason != "length"
        [message] = fake.bot_messages(chat)
        assert message.text == longer.text

        fake.press(message, "🔄 Regenerate", alice)
        again = await stored_reply(runner, lambda row: row.n_tokens <= 12)
        await fake.wait_for(lambda: fake.bot_messages(chat)[0].text == again.text, timeout=60)
        assert len(fake.bot_messages(chat)) == 1 and again.text
        assert all(query.answered for query in fake.callback_queries())
    finally:
        await engine.aclose()
