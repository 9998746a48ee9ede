"""/min_p and /repeat_last_n reach the sampler of both engines on the real model."""

from __future__ import annotations

from typing import Any

import pytest

from bot.core.prompt import Turn
from bot.core.templates import choose_format
from bot.engine.base import Finished, GenerationRequest, SamplingParams

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

QUESTION = "List the colours of the rainbow, then list them again, twice."


async def reply(engine: Any, key: str, **sampling: Any) -> str:
    info = engine.info
    chat_format = choose_format("auto", model_template=info.chat_template,
                                bos_token=info.bos_token, eos_token=info.eos_token)
    request = GenerationRequest(
        chat_key=key, prompt=chat_format.render(None, [Turn("user", QUESTION)]),
        sampling=SamplingParams(n_predict=40, seed=7, **sampling), stop=chat_format.stop,
    )
    finished = None
    async for event in engine.generate(request):
        if isinstance(event, Finished):
            finished = event
    assert finished is not None
    return finished.text


async def test_repeat_last_n_sets_the_window_of_the_repeat_penalty(chat_engine: Any) -> None:
    await reply(chat_engine, "knobs-warm-up", temp=0.0)  # later runs all reuse this prompt
    plain = await reply(chat_engine, "knobs-a", temp=0.0, repeat_penalty=1.0)
    penalised = await reply(chat_engine, "knobs-b", temp=0.0, repeat_penalty=2.5)
    switched_off = await reply(chat_engine, "knobs-c", temp=0.0, repeat_penalty=2.5,
                               repeat_last_n=0)
    assert penalised != plain  # the penalty bites with the default window of 64
    assert switched_off == plain  # a window of 0 tokens penalises nothing


async def test_min_p_prunes_the_unlikely_tokens(chat_engine: Any) -> None:
    await reply(chat_engine, "min-p-warm-up", temp=0.0, repeat_penalty=1.0)
    greedy = await reply(chat_engine, "min-p-a", temp=0.0, repeat_penalty=1.0)
    # min-p 1 keeps only the most likely token, so even a hot temperature answers greedily.
    pruned = await reply(chat_engine, "min-p-b", temp=3.0, min_p=1.0, repeat_penalty=1.0,
                         top_k=0, top_p=1.0)
    wild = await reply(chat_engine, "min-p-c", temp=3.0, min_p=0.0, repeat_penalty=1.0,
                       top_k=0, top_p=1.0)
    assert pruned == greedy
    assert wild != greedy
