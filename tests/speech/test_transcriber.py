"""Speech to text with the real Whisper base of the packages, on real speech (espeak-ng)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.speech import (
    AudioTooLong,
    NothingHeard,
    SpeechCancelled,
    SpeechModelError,
    SpeechOptions,
    Transcriber,
    UndecodableAudio,
    VoiceOff,
)
from tests.cpu import THREADS
from tests.voices import encode, silence, voice_note

pytestmark = pytest.mark.timeout(300)

STORY = "Please tell me a story about a cat."


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("asr")


@pytest.fixture(scope="module")
def transcriber(models: Path) -> Iterator[Transcriber]:
    speech = Transcriber(SpeechOptions(model="base", directory=models, threads=THREADS))
    yield speech
    speech.close()


@pytest.fixture(scope="module")
def story() -> bytes:
    return voice_note(STORY)


async def test_a_voice_note_is_heard(transcriber: Transcriber, story: bytes) -> None:
    heard = await transcriber.transcribe(story)
    assert {"story", "cat"} <= set(words(heard.text)), heard.text
    assert heard.language == "en"
    assert 2.0 < heard.seconds < 5.0
    assert heard.working > 0 and heard.real_time_factor == heard.working / heard.seconds


async def test_it_runs_off_the_event_loop(transcriber: Transcriber, story: bytes) -> None:
    ticks = 0
    threads: set[str] = set()

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    original = transcriber._transcribe

    def spy(*args: object) -> object:
        threads.add(threading.current_thread().name)
        return original(*args)  # type: ignore[arg-type]

    transcriber._transcribe = spy  # type: ignore[method-assign]
    try:
        first, second = await asyncio.gather(transcriber.transcribe(story),
                                             transcriber.transcribe(story))
    finally:
        del transcriber._transcribe
        ticker.cancel()
    assert first.text == second.text
    assert ticks > 20  # the loop went on while both were transcribed
    assert len(threads) == 1 and next(iter(threads)).startswith("speech")  # one worker


async def test_an_english_note_from_a_chinese_app_stays_english(
    transcriber: Transcriber, story: bytes
) -> None:
    heard = await transcriber.transcribe(story, hint="zh-hans")
    assert heard.language == "en" and "cat" in words(heard.text)


async def test_asr_language_fixes_the_language(models: Path, story: bytes) -> None:
    fixed = Transcriber(SpeechOptions(model="base", directory=models, threads=THREADS,
                                      language="en-US"))
    try:
        heard = await fixed.transcribe(story, hint="zh")
    finally:
        fixed.close()
    assert heard.language == "en" and "story" in words(heard.text)


async def test_silence_bad_audio_and_the_limit(transcriber: Transcriber) -> None:
    with pytest.raises(NothingHeard):
        await transcriber.transcribe(encode(silence(3.0)))
    with pytest.raises(UndecodableAudio):
        await transcriber.transcribe(b"\x00garbage" * 100)
    short = Transcriber(SpeechOptions(model="base", directory=Path("/nowhere"), threads=1,
                                      max_seconds=2))
    try:
        with pytest.raises(AudioTooLong):
            await short.transcribe(voice_note(STORY))
    finally:
        short.close()


async def test_stopped_between_segments(transcriber: Transcriber, story: bytes) -> None:
    class Stopped:
        cancelled = True

    with pytest.raises(SpeechCancelled):
        await transcriber.transcribe(story, stop=Stopped())


async def test_no_model_and_a_broken_model(tmp_path: Path, story: bytes) -> None:
    off = Transcriber(SpeechOptions(model="", directory=tmp_path, threads=1))
    assert not off.enabled
    with pytest.raises(VoiceOff):
        await off.transcribe(story)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"not a model" * 100)
    (broken / "config.json").write_text("{}")
    bad = Transcriber(SpeechOptions(model=str(broken), directory=tmp_path, threads=1))
    try:
        with pytest.raises(SpeechModelError, match="cannot load the speech model"):
            await bad.transcribe(story)
        with pytest.raises(SpeechModelError):  # tried again, not remembered as loaded
            await bad.transcribe(story)
    finally:
        bad.close()
