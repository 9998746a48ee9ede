"""A transcription shares the CPU fairly with the replies of the real demo model's pool: it
waits its turn in the same queue (its place heard), holds the engine's place while it runs (a
text reply then waits), and gives it back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.core.prompt import Turn
from bot.engine.base import CancelToken, GenerationRequest, Queued, SamplingParams, TextDelta
from bot.engine.pool import PoolEngine, PoolOptions
from bot.ops.runtime import open_runtime
from bot.speech.packaged import WHISPER_BASE, prepare
from tests.cpu import THREADS
from tests.voices import voice_note

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]


@pytest.fixture
def database_kind() -> str:
    return "sqlite"


# Slow by nature: Whisper base transcribes a spoken note while the real model writes replies on
# the same two cores, the contention this test is about.
async def test_a_transcription_takes_a_fair_turn_with_the_replies(
    make_settings: Any, demo_model: Path, tmp_path: Path
) -> None:
    whisper = prepare(WHISPER_BASE, tmp_path / "asr")
    note = voice_note("Good morning. How are you today?")
    engine = PoolEngine(PoolOptions(model_path=demo_model, n_ctx=512, n_slots=1, threads=THREADS))
    try:
        async with open_runtime(make_settings(asr_model=str(whisper)), engine=engine) as runtime:
            hearing = runtime.service.hearing
            places: list[int] = []

            async def heard_place(place: Queued) -> None:
                places.append(place.ahead)

            # Chat a's work holds the pool's one place: the note of chat b waits its turn.
            async with engine.turn(chat_key="a", cancel=CancelToken()):
                waiting = asyncio.create_task(
                    hearing.transcribe(note, chat_key="b", on_place=heard_place))
                await asyncio.sleep(1.0)
                assert not waiting.done() and places == [1]
            heard = await asyncio.wait_for(waiting, timeout=120)
            assert "morning" in heard.text.lower()

            # While a note is heard it holds the place: a text reply waits for it.
            hearing_now = asyncio.create_task(hearing.transcribe(note, chat_key="b"))
            await asyncio.sleep(0.3)
            request = GenerationRequest(
                chat_key="c", prompt=runtime.service.running_model.chat_format.render(
                    None, [Turn("user", "Say hi.")]),
                sampling=SamplingParams(n_predict=8, seed=1, temp=0.0))
            events = engine.generate(request)
            first = await anext(events)
            assert first == Queued(1) and not hearing_now.done()
            rest = [event async for event in events]
            assert hearing_now.done()  # the reply started only once the note was heard
            assert any(isinstance(event, TextDelta) for event in rest)
            await hearing_now
    finally:
        await engine.aclose()
