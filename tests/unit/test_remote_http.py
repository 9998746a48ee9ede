"""HTTP to model servers without a server: how many calls one server gets at once."""

from __future__ import annotations

import asyncio

import httpx

from bot.core.prompt import Segment
from bot.engine.remote.http import CALLS_AT_ONCE, ServerConnection
from bot.engine.remote.llamacpp import SegmentTokens


async def test_a_long_history_is_tokenized_a_few_calls_at_a_time() -> None:
    in_flight = 0
    most = 0

    async def tokenize(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json={"tokens": [1, 2, 3]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(tokenize)) as client:
        tokens = SegmentTokens(ServerConnection(client, "http://127.0.0.1:9", None))
        prompt = tuple(Segment(f"turn {n}", False) for n in range(200))
        assert len(await tokens.prompt(prompt)) == 600
    assert most == CALLS_AT_ONCE
