"""Voice notes end to end: real speech made by espeak-ng, sent through the fake Bot API as
Telegram sends voice notes (OGG/Opus), audio files and round videos, heard by the real Whisper
base of the packages; what was heard shown above the reply and stored as the question."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from bot.chat.export import render_jsonl, render_markdown
from bot.speech.packaged import WHISPER_BASE, prepare
from bot.store import chat_data
from bot.store.database import sessions
from bot.store.schema import TurnRow
from tests.fakebotapi import MAX_DOWNLOAD_BYTES, FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine
from tests.voices import (
    encode,
    espeak,
    round_video,
    samples_of,
    silence,
    voice_note,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

STORY = "Please tell me a story about a cat."
MORNING = "Good morning. How are you today?"
HEARD = 60.0
"""Seconds a test waits for a note to be heard on a busy two-core machine."""


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Whisper base joined once for the module (the tests of the packaged default join their
    own)."""
    return prepare(WHISPER_BASE, tmp_path_factory.mktemp("asr"))


@pytest.fixture(scope="module")
def story() -> bytes:
    return voice_note(STORY)


async def stored(runner: Any, until: Any = None, wait: float = 10.0) -> list[TurnRow]:
    deadline = time.monotonic() + wait
    while True:
        async with sessions(runner.runtime.database)() as session:
            rows = list((await session.execute(select(TurnRow).order_by(TurnRow.id))).scalars())
        if until is None or until(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


def metric(runner: Any, name: str, **labels: str) -> float:
    value = runner.runtime.service.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


async def test_a_private_voice_note_is_heard_answered_and_stored(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, story: bytes
) -> None:
    runner = await run_bot(engine)  # the default asr_model: Whisper base of the packages
    alice = fake.user("Alice", "alice", language_code="en")
    chat = fake.private_chat(alice)
    engine.enqueue("Once upon a time a cat sat on a mat.")
    fake.send_voice(chat, alice, story, duration=4)
    reply = await fake.wait_for(
        lambda: next((t for t in texts(fake, chat) if "Once upon a time" in t), None),
        timeout=HEARD, what="the reply to the voice note")
    first, _, answer = reply.partition("\n\n")
    assert first.startswith("🎤 “") and {"story", "cat"} <= words(first), reply
    assert answer == "Once upon a time a cat sat on a mat."
    assert len(fake.bot_messages(chat)) == 1  # what was heard, then the answer, in one message
    assert {"story", "cat"} <= words(engine.prompts()[0])
    rows = await stored(runner, until=lambda rows: len(rows) == 2 and rows[1].delivered)
    question = rows[0]
    assert question.role == "user" and {"story", "cat"} <= words(question.text)
    assert question.heard_from == "voice" and 2.5 < (question.heard_seconds or 0) < 6
    assert rows[1].text == "Once upon a time a cat sat on a mat."
    assert fake.downloads() and (runner.settings.data / "asr" / "whisper-base").is_dir()
    # /metrics: one heard, its seconds of audio, its real-time factor.
    assert metric(runner, "alpaca_bot_transcriptions_total", outcome="heard") == 1
    assert metric(runner, "alpaca_bot_transcribed_audio_seconds_total") == pytest.approx(
        question.heard_seconds, abs=0.01)
    assert metric(runner, "alpaca_bot_transcription_real_time_factor_count") == 1
    # /retry writes the answer again under what was heard.
    engine.enqueue("A second story about the cat.")
    fake.send_text(chat, alice, "/retry")
    again = await fake.wait_for(
        lambda: next((t for t in texts(fake, chat) if "second story" in t), None), timeout=10)
    assert again.startswith(first + "\n\n")
    # The export shows the question as heard.
    async with sessions(runner.runtime.database)() as session:
        found = await chat_data.chat_with_turns(session, chat["id"])
    assert found is not None
    length = round(question.heard_seconds or 0)
    assert f"**Alice** 🎤 *(voice note, {length} s)*: {question.text}" in render_markdown(found)
    assert '"heard": {"from": "voice", "seconds": ' in render_jsonl(found)


# Slow by nature: Whisper base transcribes several real voice notes (speech made by espeak-ng);
# runs on both databases.
async def test_groups_hear_only_what_is_for_the_bot(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, whisper: Path, story: bytes
) -> None:
    await run_bot(engine, asr_model=str(whisper))
    group = fake.group_chat("Cat lovers")
    alice, bob = fake.user("Alice", "alice"), fake.user("Bob", "bob")
    # Bob's voice note among people: not for the bot, not even downloaded.
    bobs = fake.send_voice(group, bob, story, duration=4)
    engine.enqueue("Hi Alice.")
    fake.send_text(group, alice, "@alpaca_test_bot hello")
    await fake.wait_for(lambda: texts(fake, group) == ["Hi Alice."], timeout=10)
    assert fake.downloads() == []
    # A mention replying to Bob's note asks about what it says.
    engine.enqueue("He wants a story about a cat.")
    fake.send_text(group, alice, "@alpaca_test_bot what does he say?", reply_to=bobs)
    answer = await fake.wait_for(
        lambda: next((t for t in texts(fake, group) if "He wants" in t), None), timeout=HEARD)
    assert answer.startswith("🎤 “") and {"story", "cat"} <= words(answer.partition("\n\n")[0])
    prompt = engine.prompts()[-1]
    assert "what does he say?" in prompt and {"story", "cat"} <= words(prompt)
    assert "voice note" in prompt and "Bob" in prompt  # whose note it is
    # A voice note replying to the bot is a question.
    engine.enqueue("Good morning to you too.")
    fake.send_voice(group, bob, voice_note(MORNING), duration=3,
                    reply_to=fake.bot_messages(group)[-1].message_id)
    morning = await fake.wait_for(
        lambda: next((t for t in texts(fake, group) if "to you too" in t), None),
        timeout=HEARD)
    assert {"morning", "today"} <= words(morning.partition("\n\n")[0])
    # /transcribe as a reply: the transcript alone, for anyone, without the model.
    asked = len(engine.history)
    fake.send_text(group, bob, "/transcribe", reply_to=bobs)
    transcript = await fake.wait_for(
        lambda: next((m for m in fake.bot_messages(group)
                      if m.text.startswith("🎤") and "\n\n" not in m.text), None),
        timeout=HEARD)
    assert {"story", "cat"} <= words(transcript.text)
    assert len(engine.history) == asked
    fake.send_text(group, bob, "/transcribe")
    await fake.wait_for(lambda: "Reply to a voice note" in texts(fake, group)[-1], timeout=10)


async def test_audio_files_and_round_videos(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, whisper: Path
) -> None:
    runner = await run_bot(engine, asr_model=str(whisper))
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    speech = samples_of(espeak(MORNING), rate=44_100)
    mp3 = encode(np.concatenate([silence(0.3, 44_100), speech]), container="mp3",
                 codec="libmp3lame", rate=44_100)
    engine.enqueue("It is a greeting.")
    fake.send_audio(chat, alice, mp3, duration=3, file_name="hello.mp3",
                    caption="what kind of message is this?")
    await fake.wait_for(lambda: any("greeting" in t for t in texts(fake, chat)), timeout=HEARD)
    prompt = engine.prompts()[-1]
    assert "what kind of message is this?" in prompt and {"morning", "today"} <= words(prompt)
    engine.enqueue("Fine, thanks.")
    video = round_video(np.concatenate([silence(0.3), samples_of(espeak(MORNING))]))
    fake.send_video_note(chat, alice, video, duration=3)
    reply = await fake.wait_for(
        lambda: next((t for t in texts(fake, chat) if "Fine, thanks." in t), None),
        timeout=HEARD)
    assert {"morning", "today"} <= words(reply)
    rows = await stored(runner, until=lambda rows: len(rows) == 4)
    assert [r.heard_from for r in rows if r.role == "user"] == ["audio", "video_note"]
    assert rows[0].text == "what kind of message is this?"  # the audio is what it asks about


async def test_bad_input_gets_one_clear_line_and_text_goes_on(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, whisper: Path
) -> None:
    runner = await run_bot(engine, asr_model=str(whisper), asr_max_seconds=60)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    # Longer than asr_max_seconds, as Telegram says: refused before any download.
    fake.send_voice(chat, alice, b"OggS", duration=61)
    await fake.wait_for(lambda: texts(fake, chat)[-1:] == [
        "🎤 That is 61 s long; I listen to 60 s at most."], timeout=10)
    # Past the 20 MB bots may download: refused before asking Telegram.
    fake.send_voice(chat, alice, b"OggS", duration=30, size=MAX_DOWNLOAD_BYTES + 1)
    await fake.wait_for(lambda: "Telegram lets bots download files up to 20 MB"
                        in texts(fake, chat)[-1], timeout=10)
    assert fake.downloads() == [] and fake.requests("getFile") == []
    # Not audio, and only silence.
    fake.send_voice(chat, alice, b"this is no voice note" * 20, duration=2)
    await fake.wait_for(lambda: texts(fake, chat)[-1] == "🎤 I could not read that audio.",
                        timeout=HEARD)
    fake.send_voice(chat, alice, encode(silence(2.0)), duration=2)
    await fake.wait_for(lambda: texts(fake, chat)[-1] == "🎤 I heard nothing in that: only silence.",
                        timeout=HEARD)
    # Longer than it said: the limit holds while decoding.
    fake.send_voice(chat, alice, encode(silence(62.0)), duration=30)
    await fake.wait_for(lambda: "longer than 60 s" in texts(fake, chat)[-1], timeout=HEARD)
    assert len(fake.bot_messages(chat)) == 5
    for outcome, count in (("too_long", 2), ("too_big", 1), ("undecodable", 1),
                           ("nothing_heard", 1)):
        assert metric(runner, "alpaca_bot_transcriptions_total", outcome=outcome) == count
    rows = await stored(runner)
    assert rows == []  # nothing stored: nothing was asked
    engine.enqueue("Text still works.")
    fake.send_text(chat, alice, "hello?")
    await fake.wait_for(lambda: texts(fake, chat)[-1] == "Text still works.", timeout=10)


@pytest.mark.log_errors(r"the speech model cannot be used")
async def test_a_broken_model_is_one_line_and_the_admins_hear(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, story: bytes, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-whisper"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"not a CTranslate2 model" * 100)
    (broken / "config.json").write_text("{}")
    boss = fake.user("Boss", "boss")
    fake.private_chat(boss)
    await run_bot(engine, asr_model=str(broken), admins=[boss["id"]])
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    fake.send_voice(chat, alice, story, duration=4)
    await fake.wait_for(lambda: texts(fake, chat)[-1:] == [
        "⚠️ I cannot listen right now: the speech model is missing or broken. The bot's "
        "admins have been told."], timeout=HEARD)
    alert = await fake.wait_for(lambda: texts(fake, boss), timeout=10)
    assert alert[0].startswith("⚠️ Voice notes cannot be heard: cannot load the speech model")
    engine.enqueue("Text still works.")
    fake.send_text(chat, alice, "hello?")
    await fake.wait_for(lambda: texts(fake, chat)[-1] == "Text still works.", timeout=10)


async def test_voice_off(fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any) -> None:
    await run_bot(engine, asr_model="")
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    fake.send_voice(chat, alice, b"OggS", duration=3)
    await fake.wait_for(lambda: texts(fake, chat) == [
        "🎤 Voice notes are off on this bot (no speech model is set up)."], timeout=10)
    assert fake.downloads() == []
