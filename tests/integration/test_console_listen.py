"""The console chat hears an audio file: /listen FILE, real speech (espeak-ng) heard by the real
Whisper base of the packages, shown, then answered and stored like a voice note."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.console import ConsoleFront, handle_command
from bot.ops.runtime import open_runtime
from bot.store.schema import TurnRow
from tests.fakeengine import ScriptedEngine
from tests.voices import voice_note

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def database_kind() -> str:
    return "sqlite"


async def test_listen_hears_a_file_then_answers_it(make_settings: Any, tmp_path: Path) -> None:
    note = tmp_path / "note.ogg"
    note.write_bytes(voice_note("Please tell me a story about a cat."))
    engine = ScriptedEngine()
    async with open_runtime(make_settings(), engine=engine) as runtime:
        service = runtime.service
        out = io.StringIO()
        front = ConsoleFront(service, out, color=False)
        engine.enqueue("Once upon a time there was a cat.")
        assert await handle_command(front, service, f"/listen {note}") is None
        shown = out.getvalue()
        heard = re.search(r"🎤 “([^”]*)”\n", shown)
        assert heard is not None, shown
        assert {"story", "cat"} <= set(re.findall(r"[a-z]+", heard.group(1).lower()))
        assert shown.index("🎤") < shown.index("Once upon a time there was a cat.")
        assert heard.group(1) in engine.prompts()[0]
        async with runtime.sessions() as session:
            question = (await session.execute(
                select(TurnRow).where(TurnRow.role == "user"))).scalar_one()
        assert question.text == heard.group(1)
        assert question.heard_from == "file" and (question.heard_seconds or 0) > 2


async def test_listen_says_what_is_wrong(make_settings: Any, tmp_path: Path) -> None:
    junk = tmp_path / "junk.ogg"
    junk.write_bytes(b"no sound in here" * 10)
    async with open_runtime(make_settings(), engine=ScriptedEngine()) as runtime:
        service = runtime.service
        front = ConsoleFront(service, io.StringIO(), color=False)
        usage = await handle_command(front, service, "/listen")
        assert usage is not None and usage.startswith("Usage: /listen FILE")
        missing = await handle_command(front, service, f"/listen {tmp_path / 'nope.ogg'}")
        assert missing == f"No such file: {tmp_path / 'nope.ogg'}"
        assert await handle_command(front, service, f"/listen {junk}") == (
            "🎤 I could not read that audio.")
        transcribe = await handle_command(front, service, "/transcribe")
        assert transcribe == "/transcribe works in Telegram only."
    async with open_runtime(make_settings(asr_model=""), engine=ScriptedEngine()) as runtime:
        front = ConsoleFront(runtime.service, io.StringIO(), color=False)
        assert await handle_command(front, runtime.service, f"/listen {junk}") == (
            "🎤 Voice notes are off on this bot (no speech model is set up).")
