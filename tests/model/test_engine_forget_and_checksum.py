"""On the demo model: a saved state whose bytes changed on disk is refused and the chat evaluated
again, with the same reply; `forget` drops a chat's cache in the pool (its slot and its saved
state) and in the simple engine."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest

from bot.core.prompt import Turn
from bot.engine.llama import LlamaEngine
from bot.engine.statestore import MAGIC
from tests.model.test_pool_engine import QUESTIONS, ask, collect, open_pool

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]


def saved_chats(states: Path) -> set[str]:
    """The chats of the state files in `states`, read from their headers."""
    chats = set()
    for path in states.glob("*.kvstate"):
        data = path.read_bytes()
        (length,) = struct.unpack_from("<I", data, len(MAGIC))
        start = len(MAGIC) + 4
        chats.add(json.loads(data[start : start + length])["chat"])
    return chats


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


async def test_a_state_changed_on_disk_is_refused_and_evaluated_again(
    demo_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    states = tmp_path / "states"
    first = [Turn("user", QUESTIONS["b"])]
    async with open_pool(demo_model, n_slots=1, state_dir=states) as engine:
        _, done = await collect(engine, ask(engine, "r", first))
    [saved] = states.glob("*.kvstate")  # saved on close
    follow = [*first, Turn("assistant", done.text), Turn("user", "Which one do you like best?")]
    async with open_pool(demo_model, n_slots=1) as engine:  # no state dir: evaluates it all
        _, fresh = await collect(engine, ask(engine, "r", follow))
    flip_middle_byte(saved)
    with caplog.at_level(logging.WARNING, logger="bot.engine.cache"):
        async with open_pool(demo_model, n_slots=1, state_dir=states) as engine:
            _, again = await collect(engine, ask(engine, "r", follow))
    assert "refused the saved state of chat r" in caplog.text
    assert "does not match its checksum); evaluating again" in caplog.text
    assert again.n_evaluated == again.n_prompt_tokens == fresh.n_evaluated
    assert again.text == fresh.text


async def test_the_pool_forgets_a_chat_in_its_slot_and_on_disk(demo_model: Path, tmp_path: Path) -> None:
    states = tmp_path / "states"
    turns = [Turn("user", QUESTIONS["a"])]
    async with open_pool(demo_model, n_slots=1, state_dir=states) as engine:
        _, done = await collect(engine, ask(engine, "gone", turns))
        await collect(engine, ask(engine, "other", [Turn("user", QUESTIONS["c"])]))  # evicts
        await collect(engine, ask(engine, "kept", [Turn("user", QUESTIONS["b"])]))
        assert saved_chats(states) == {"gone", "other"}
        await engine.forget("gone")  # on disk
        assert saved_chats(states) == {"other"}
        follow = [*turns, Turn("assistant", done.text), Turn("user", "And Germany's?")]
        _, after = await collect(engine, ask(engine, "gone", follow))
        assert after.n_evaluated == after.n_prompt_tokens  # nothing came back from disk
        await engine.forget("gone")  # in its slot
        assert engine.cached_tokens("gone") is None
        assert engine.memory_report().kv_bytes_used == 0
        await engine.forget("never seen")
    assert saved_chats(states) == {"other", "kept"}  # the forgotten chat is not saved at close


async def test_the_simple_engine_forgets_the_chat_it_holds(llama_engine: LlamaEngine) -> None:
    from bot.engine.base import GenerationRequest
    from tests.model.test_pool_engine import chat_format, sampling

    def request(key: str, text: str) -> GenerationRequest:
        chat = chat_format(llama_engine)  # type: ignore[arg-type]
        return GenerationRequest(chat_key=key, prompt=chat.render(None, [Turn("user", text)]),
                                 sampling=sampling(n_predict=4), stop=chat.stop)

    await collect(llama_engine, request("s1", QUESTIONS["a"]))  # type: ignore[arg-type]
    await llama_engine.forget("someone else")
    assert llama_engine.memory_report().slots[0].chat_key == "s1"
    await llama_engine.forget("s1")
    report = llama_engine.memory_report()
    assert report.slots[0].chat_key is None and report.kv_bytes_used == 0
    _, again = await collect(llama_engine, request("s1", QUESTIONS["a"]))  # type: ignore[arg-type]
    assert again.n_evaluated == again.n_prompt_tokens
