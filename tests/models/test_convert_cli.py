"""`alpaca-bot convert` from the command line, and a converted Alpaca model chatting in the bot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.core.prompt import Turn, prompt_text
from bot.core.templates import AlpacaFormat
from bot.engine.llama import EngineOptions, LlamaEngine
from bot.ops.runtime import open_runtime
from bot.store.repository import ChatRef
from tests.cpu import THREADS
from tests.sinks import RecordingSink, ask

pytestmark = pytest.mark.timeout(120)



def test_convert_command_writes_a_gguf(make_meta: Callable[..., Any], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder, cfg, _ = make_meta(n_shards=2)
    out = tmp_path / "tiny-f16.gguf"
    assert main(["convert", str(folder), "--outfile", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and f"wrote {out} (f16" in printed and "meta checkpoint" in printed
    assert main(["convert", str(tmp_path / "missing"), "--outfile", str(out)]) == 1
    assert capsys.readouterr().err.startswith("alpaca-bot: error: ")


async def test_converted_alpaca_model_chats_with_no_further_flag(
    make_meta: Callable[..., Any], make_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from bot.models.convert import convert_checkpoint

    folder, _, _ = make_meta()
    out = tmp_path / "alpaca-tiny.gguf"
    convert_checkpoint(folder, out, progress=False)
    engine = LlamaEngine(EngineOptions(model_path=out, n_ctx=256, threads=THREADS))
    try:
        settings = make_settings(model=out, ctx=256, n_predict=8, max_ctx=256, seed=1)
        async with open_runtime(settings, engine=engine) as runtime:
            service = runtime.service
            turns = [Turn("user", "Hello there")]
            # "auto" picks the embedded template, which renders exactly the Alpaca format.
            assert prompt_text(service.running_model.chat_format.render(None, turns)) == prompt_text(
                AlpacaFormat().render(None, turns)
            )
            assert set(AlpacaFormat().stop) <= set(service.running_model.chat_format.stop) | {"### Response:"}
            sink = RecordingSink()
            outcome = await ask(service, ChatRef(5, "private"), "Hello", sink)
            assert outcome is not None and outcome.n_tokens <= 8
    finally:
        await engine.aclose()
