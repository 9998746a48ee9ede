"""A model server in trouble, between the remote engine and a real `llama-server` (through
tests/faultyproxy.py): silent for `backend_timeout`, answering 5xx, or cutting an OpenAI stream.
The README's promises: it is marked down, checked with backoff (0.5 s doubling to 15 s) until it
answers, and an OpenAI server's cut-off reply is written again elsewhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.prompt import Turn
from bot.engine.base import Finished, Restarted, ServerStatus, TextDelta
from bot.engine.remote.backends import FIRST_RETRY
from bot.engine.remote.engine import RemoteEngine
from tests.faultyproxy import FaultyProxy
from tests.llamaserver import LlamaServer
from tests.remote.test_remote_engine import connect, request

pytestmark = pytest.mark.timeout(180)

CHECK_PATH = "/props"
"""What a health check of a `llama.cpp` server that is down asks first."""
LATE = 0.4
EARLY = 0.1
"""How much sooner than the proxy's note of a request the engine may have sent it."""
"""How late a timer of the engine may fire on a loaded machine (its timers are what is checked:
firing early is never allowed)."""


@pytest.fixture
async def upstream(demo_model: Path) -> AsyncIterator[LlamaServer]:
    async with LlamaServer(demo_model, slots=2, ctx=1024) as server:
        yield server


class Changes:
    """When the engine said a server went down or came back."""

    def __init__(self, engine: RemoteEngine) -> None:
        self.down: list[float] = []
        self.back: list[float] = []
        engine.backends.add_listener(self._heard)

    async def _heard(self, status: ServerStatus) -> None:
        (self.back if status.up else self.down).append(time.monotonic())


async def until(predicate: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_server_silent_for_backend_timeout_is_marked_down_and_checked_after_half_a_second(
    upstream: LlamaServer,
) -> None:
    timeout = 4.0
    async with FaultyProxy(upstream.url) as proxy:
        engine = await connect(proxy.url, timeout=timeout, patrol=3600.0)
        try:
            changes = Changes(engine)
            proxy.mode = "silent"
            switched = time.monotonic()
            req = request(engine, "a", [Turn("user", "Say hello.")], n=8)
            reply = asyncio.create_task(collect(engine, req))
            await until(lambda: changes.down, timeout + 10)
            asked = next(s.at for s in proxy.seen if s.at > switched)
            # Down once it stayed silent for backend_timeout: not before, and not much after (the
            # engine's clock starts when it sends, a moment before the proxy notes the arrival).
            assert timeout - EARLY <= changes.down[0] - asked <= timeout + LATE
            proxy.mode = "pass"
            await until(lambda: changes.back, 10)
            [check] = proxy.seen_since(changes.down[0], CHECK_PATH)[:1]
            assert FIRST_RETRY <= check - changes.down[0] <= FIRST_RETRY + LATE
            finished, _ = await asyncio.wait_for(reply, timeout=60)
            assert finished.text
        finally:
            await engine.aclose()


async def test_a_server_answering_5xx_is_marked_down_at_once_and_checked_with_backoff(
    upstream: LlamaServer,
) -> None:
    async with FaultyProxy(upstream.url) as proxy:
        engine = await connect(proxy.url, patrol=3600.0)
        try:
            changes = Changes(engine)
            proxy.mode = "5xx"
            switched = time.monotonic()
            req = request(engine, "a", [Turn("user", "Say hello.")], n=8)
            reply = asyncio.create_task(collect(engine, req))
            await until(lambda: changes.down, 10)
            asked = next(s.at for s in proxy.seen if s.at > switched)
            assert changes.down[0] - asked <= LATE
            await until(lambda: len(proxy.seen_since(changes.down[0], CHECK_PATH)) == 3, 15)
            assert not changes.back and engine.servers_up == 0
            checks = proxy.seen_since(changes.down[0], CHECK_PATH)
            waits = [later - earlier for earlier, later in
                     zip([changes.down[0], *checks], checks, strict=False)]
            for waited, expected in zip(waits, (0.5, 1.0, 2.0), strict=True):
                assert expected <= waited <= expected + LATE, waits
            proxy.mode = "pass"  # the next check, 4 s after the third, finds it back
            await until(lambda: changes.back, 10)
            assert 4.0 <= changes.back[0] - checks[-1] <= 4.0 + LATE
            finished, _ = await asyncio.wait_for(reply, timeout=60)
            assert finished.text
        finally:
            await engine.aclose()


async def test_an_openai_servers_cut_off_reply_is_written_again_on_another(
    upstream: LlamaServer,
) -> None:
    async with FaultyProxy(upstream.url) as one, FaultyProxy(upstream.url) as two:
        engine = await connect(one.url, two.url, kind="openai", patrol=3600.0)
        try:
            changes = Changes(engine)
            turns = [Turn("user", "Describe a forest in detail.")]
            whole, _ = await collect(engine, request(engine, "reference", turns, n=40))
            one.cuts = two.cuts = [6]  # shared: the first stream through either is cut
            finished, events = await collect(engine, request(engine, "a", turns, n=40))
            [restart] = [i for i, e in enumerate(events) if isinstance(e, Restarted)]
            before = "".join(e.text for e in events[:restart] if isinstance(e, TextDelta))
            after = "".join(e.text for e in events[restart:] if isinstance(e, TextDelta))
            assert before and whole.text.startswith(before)
            # Written again from the start (greedy, so the same words), and only that is kept.
            assert after == whole.text and finished.text == whole.text
            assert len(changes.down) == 1  # the server that cut it off (back since)
        finally:
            await engine.aclose()


async def collect(engine: RemoteEngine, req: object) -> tuple[Finished, list[object]]:
    """Every event of a reply, and its Finished."""
    events: list[object] = []
    async for event in engine.generate(req):  # type: ignore[arg-type]
        events.append(event)
    finished = events[-1]
    assert isinstance(finished, Finished)
    return finished, events
