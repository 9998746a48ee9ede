"""The console chat reads a file too: /read FILE [QUESTION], a document (kept for the questions
that follow) or a picture (its text asked about), from the same command table."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from bot.console import ConsoleFront, handle_command
from bot.ops.runtime import open_runtime
from tests.fakeengine import ScriptedEngine
from tests.reading.files import text_image, text_pdf

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def database_kind() -> str:
    return "sqlite"


async def test_read_a_document_then_ask_and_a_picture_with_a_question(
    make_settings: Any, tmp_path: Path
) -> None:
    report = tmp_path / "farm report.pdf"
    report.write_bytes(text_pdf(["Intro", "The wool sales brought 4,200 euros."]))
    shot = tmp_path / "error.png"
    shot.write_bytes(text_image(["Permission denied: /var/log/app.log"]))
    engine = ScriptedEngine()
    async with open_runtime(make_settings(), engine=engine) as runtime:
        service = runtime.service
        out = io.StringIO()
        front = ConsoleFront(service, out, color=False)
        assert await handle_command(front, service, f"/read {report}") is None
        assert "📄 Read farm report.pdf (2 pages); ask me about it." in out.getvalue()
        assert engine.history == []
        engine.enqueue("4,200 euros.")
        await front.ask("How much did the wool sales bring?")
        assert "[farm report.pdf, page 2]\n> The wool sales brought 4,200 euros." in (
            engine.prompts()[0])
        engine.enqueue("The log file is not writable.")
        assert await handle_command(front, service, f"/read {shot} why does it fail?") is None
        prompt = engine.prompts()[1]
        assert "why does it fail?\n[text read from the image:]\n> " in prompt
        assert "Permission denied" in prompt
        assert "The log file is not writable." in out.getvalue()
        docs = await handle_command(front, service, "/docs")
        assert docs is not None and "📄 farm report.pdf (2 pages)" in docs


async def test_read_says_what_is_wrong(make_settings: Any, tmp_path: Path) -> None:
    async with open_runtime(make_settings(), engine=ScriptedEngine()) as runtime:
        service = runtime.service
        front = ConsoleFront(service, io.StringIO(), color=False)
        usage = await handle_command(front, service, "/read")
        assert usage is not None and usage.startswith("Usage: /read FILE [QUESTION]")
        missing = await handle_command(front, service, f"/read {tmp_path / 'nope.txt'}")
        assert missing is not None and missing.startswith("Cannot read ")
        binary = tmp_path / "tool.bin"
        binary.write_bytes(bytes(range(256)) * 8)
        assert "not text" in (await handle_command(front, service, f"/read {binary}") or "")
