"""`forget` on the remote engine against a real `llama-server`: the chat's slot is erased, so its
next reply evaluates its whole prompt; the server's own files are left alone. (A llama-server
also keeps prompts in RAM, `--cache-ram`, which no API call empties.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.core.prompt import Turn
from tests.llamaserver import LlamaServer
from tests.remote.test_remote_engine import connect, reply, request

pytestmark = pytest.mark.timeout(120)


async def test_forget_erases_the_chats_slot(demo_model: Path, tmp_path: Path) -> None:
    async with LlamaServer(demo_model, slots=1, ctx=1024, slot_save_path=tmp_path) as server:
        engine = await connect(server.url)
        try:
            turns = [Turn("user", "Name three colours of the rainbow.")]
            first, _ = await reply(engine, request(engine, "a", turns))
            await engine.forget("a")
            assert engine.memory_report().slots[0].chat_key is None
            turns += [Turn("assistant", first.text), Turn("user", "And two animals?")]
            again, _ = await reply(engine, request(engine, "a", turns))
            assert again.n_evaluated >= again.n_prompt_tokens - 1, again  # nothing reused

            await reply(engine, request(engine, "b", [Turn("user", "What is two plus two?")]))
            assert await asyncio.to_thread((tmp_path / "alpaca-bot-a.bin").is_file)  # saved
            await engine.forget("a")  # no slot to erase; the server's files stay the server's
            assert await asyncio.to_thread((tmp_path / "alpaca-bot-a.bin").is_file)
            assert engine.memory_report().slots[0].chat_key == "b"
            await engine.forget("never seen")
        finally:
            await engine.aclose()
