"""Admin commands through the fake Bot API: /model (and /quantize, in test_quantize_bot.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.engine.base import Engine, ModelInfo
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


class NamedEngine(ScriptedEngine):
    def __init__(self, path: Path, n_ctx: int) -> None:
        super().__init__(n_ctx=n_ctx, n_ctx_train=n_ctx)
        self._info = ModelInfo(
            path=path, name=path.stem, n_ctx_train=n_ctx, n_ctx=n_ctx, chat_template=None,
            bos_token="<s>", eos_token="</s>",
        )


async def test_model_lists_and_switches_for_bot_admins_only(
    fake: FakeBotAPI, run_bot, demo_model: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    models = tmp_path / "models"
    models.mkdir()
    first, second = models / "alpha-q4_1.gguf", models / "beta-q4_1.gguf"
    shutil.copy(demo_model, first)
    shutil.copy(demo_model, second)
    (models / "broken.gguf").write_bytes(b"not gguf")
    admin_user, someone = fake.user("Root", "root"), fake.user("Eve", "eve")
    loaded: list[Path] = []

    def load(path: Path) -> Engine:
        loaded.append(path)
        return NamedEngine(path, 1024)

    await run_bot(NamedEngine(first, 4096), load=load, admins=[admin_user["id"]],
                  models_dir=models, max_ctx=4096)
    chat = fake.private_chat(admin_user)
    fake.send_text(chat, admin_user, "/ctx 4096")
    fake.send_text(chat, admin_user, "/model")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=10)
    listing = texts(fake, chat)[1]
    assert "▶ alpha-q4_1.gguf — 98.4 MB, Q4_1" in listing
    assert "• beta-q4_1.gguf — 98.4 MB, Q4_1" in listing
    assert "broken.gguf — not a GGUF file" in listing

    fake.send_text(chat, admin_user, "/model beta")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 4, timeout=10)
    assert texts(fake, chat)[2].startswith("Switching to beta")
    result = texts(fake, chat)[3]
    assert result.startswith("Now running beta-q4_1.gguf")
    assert "/ctx 4096 → 1024" in result
    assert loaded == [second]

    fake.send_text(chat, admin_user, "/model ../../etc/passwd")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 6, timeout=10)
    assert "models directory" in texts(fake, chat)[5]

    other = fake.private_chat(someone)
    fake.send_text(other, someone, "/model alpha")
    await fake.wait_for(lambda: texts(fake, other), timeout=10)
    assert texts(fake, other) == ["Only the bot's admins can list and switch models."]
    assert loaded == [second]
