"""The whole bot with the real demo model on the pool engine, through the fake Bot API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.engine.pool import PoolEngine, PoolOptions
from bot.store.database import sessions
from bot.store.schema import TurnRow
from tests.cpu import THREADS
from tests.fakebotapi import FakeBotAPI, texts

pytestmark = [
    pytest.mark.model,
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


# Slow by nature (the slowest test): three chats and a follow-up answered by the real model on
# one thread, end to end through the bot.
async def test_several_chats_at_once_with_the_real_model(
    fake: FakeBotAPI, run_bot, demo_model: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    engine = PoolEngine(PoolOptions(
        model_path=demo_model, n_ctx=1024, n_slots=2, threads=THREADS, state_dir=tmp_path / "state",
    ))
    try:
        runner = await run_bot(engine, seed=5, n_predict=48, ctx=1024, max_ctx=1024,
                               edit_interval_private=0.2, edit_interval_group=0.3)
        users = [fake.user(name) for name in ("Ann", "Ben", "Cat")]
        chats = [fake.private_chat(user) for user in users]
        questions = ["What is the capital of France?", "Name a fruit that is red.",
                     "用中文说你好。"]
        for chat, user, question in zip(chats, users, questions, strict=True):
            fake.send_text(chat, user, question)
        for chat in chats:
            await fake.wait_for(lambda c=chat: texts(fake, c), timeout=120)

        async def all_stored() -> list[TurnRow]:
            for _ in range(200):
                async with sessions(runner.runtime.database)() as session:
                    rows = list((await session.execute(select(TurnRow))).scalars())
                if sum(r.role == "assistant" and r.delivered for r in rows) == 3:
                    return rows
                await asyncio.sleep(0.1)
            raise AssertionError("replies were not all stored and delivered")

        rows = await all_stored()
        replies = {r.chat_id: r for r in rows if r.role == "assistant"}
        for chat in chats:
            stored = replies[chat["id"]]
            assert stored.state == "complete" and stored.text
            shown = texts(fake, chat)[-1]
            if chat is chats[2]:  # asked in Chinese of the demo model: its one-line notice
                assert shown.startswith(stored.text) and "SmolLM2-135M" in shown[len(stored.text):]
            else:
                assert shown == stored.text
            assert "\ufffd" not in stored.text
            assert stored.n_tokens is not None and stored.n_tokens <= 48
        # A follow-up in the first chat reuses its cached conversation.
        fake.send_text(chats[0], users[0], "And of Germany?")
        await fake.wait_for(lambda: len(texts(fake, chats[0])) == 2, timeout=120)
        fake.send_text(chats[0], users[0], "/settings")
        await fake.wait_for(lambda: len(texts(fake, chats[0])) == 3, timeout=30)
        assert "Memory: KV cache f16" in texts(fake, chats[0])[2]
    finally:
        await engine.aclose()
