"""llama.cpp work beside a live engine runs on a thread of its own (`on_own_thread`): the
OpenMP threads its decodes start end with it, where an executor thread would keep them, and
with them slow every later decode of the pool down (see `bot.llama.cpu.on_own_thread`)."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot.engine.slots import SlotContext
from bot.llama.cpu import on_own_thread

pytestmark = pytest.mark.model


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


async def settled_threads(at_most: int, seconds: float = 5.0) -> int:
    """The process's threads once those ending have ended (they take a moment)."""
    for _ in range(int(seconds / 0.05)):
        if os_threads() <= at_most:
            break
        await asyncio.sleep(0.05)
    return os_threads()


def decode_once(model: Path, ran_on: list[threading.Thread]) -> int:
    ran_on.append(threading.current_thread())
    ctx = SlotContext(model, n_slots=1, n_ctx=256, threads=2, batch=64, kv_type="f16")
    try:
        ctx.decode([(0, 0, [max(0, ctx.bos), 42, 43, 44], 1)])
        return 4
    finally:
        ctx.close()


async def test_llama_work_on_its_own_thread_leaves_no_threads_behind(demo_model: Path) -> None:
    before = os_threads()
    ran_on: list[threading.Thread] = []
    assert await on_own_thread(lambda: decode_once(demo_model, ran_on), name="decode") == 4
    ran_on[0].join(timeout=10)
    assert not ran_on[0].is_alive()
    assert ran_on[0] is not threading.main_thread()
    assert await settled_threads(before) == before

    # What it avoids: an executor thread keeps the decode's OpenMP threads while it lives.
    with ThreadPoolExecutor(1) as executor:
        await asyncio.get_running_loop().run_in_executor(
            executor, decode_once, demo_model, ran_on)
        # the executor's thread and its team's
        assert await settled_threads(before + 1, seconds=1.0) > before + 1


async def test_an_error_reaches_the_awaiting_task() -> None:
    def fail() -> None:
        raise ValueError("no model")

    with pytest.raises(ValueError, match="no model"):
        await on_own_thread(fail, name="failing")
