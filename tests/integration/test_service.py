"""The chat service on real SQLite with a scripted model: concurrency and switching models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.chat.switching import chosen_model, remember_model
from bot.engine.base import Engine
from bot.errors import ModelError
from bot.ops.runtime import open_runtime
from bot.store.repository import ChatRef
from tests.fakeengine import ScriptedEngine
from tests.sinks import RecordingSink

pytestmark = pytest.mark.timeout(60)



async def test_first_contact_from_many_tasks_at_once(make_settings) -> None:  # type: ignore[no-untyped-def]
    async with open_runtime(make_settings(), engine=ScriptedEngine()) as runtime:
        chat = ChatRef(77, "supergroup", "Busy group")
        answers = await asyncio.gather(
            runtime.service.set_param(chat, "temp", "0.5"),
            runtime.service.set_param(chat, "top_k", "10"),
            runtime.service.set_system(chat, "Be brief."),
            runtime.service.accept(chat, "hello"),
        )
        assert answers[0] == "--temp set to 0.5 for this chat."
        params = await runtime.service.params(chat)
        assert (params.temp, params.top_k) == (0.5, 10)


async def test_switching_models_waits_for_replies_and_clamps_settings(make_settings) -> None:  # type: ignore[no-untyped-def]
    first = ScriptedEngine(n_ctx=4096, n_ctx_train=4096, delay=0.02)
    first.enqueue(" ".join(["word"] * 40))
    small = ScriptedEngine(n_ctx=1024, n_ctx_train=1024)
    async with open_runtime(make_settings(max_ctx=4096), engine=first) as runtime:
        service = runtime.service
        roomy = ChatRef(1, "private", "Roomy")
        await service.set_param(roomy, "ctx", "4096")
        await service.set_param(roomy, "n", "1000")
        sink = RecordingSink()
        reply = asyncio.create_task(service.answer(await service.accept(roomy, "long one"), sink))
        await first.started.wait()
        loaded: list[Path] = []

        def load(path: Path) -> Engine:
            loaded.append(path)
            assert first.running == 0, "the reply in progress must finish before the switch"
            return small

        changes = await service.switch_engine(load, Path("/models/small.gguf"))
        assert (await reply) is not None and sink.final == " ".join(["word"] * 40)
        assert loaded == [Path("/models/small.gguf")]
        assert service.engine is small
        assert changes == [
            "Roomy: /ctx 4096 → 1024, /n 1000 → 960",
            "other chats: /ctx 2048 → 1024 (the configured default is larger than this model "
            "allows)",
        ]
        params = await service.params(roomy)
        assert (params.n_ctx, params.n_predict) == (1024, 960)
        assert "(-c) = 1024" in await service.settings_text(roomy)


async def test_a_model_that_fails_to_load_leaves_the_old_one(make_settings) -> None:  # type: ignore[no-untyped-def]
    first = ScriptedEngine()
    async with open_runtime(make_settings(), engine=first) as runtime:
        service = runtime.service
        reloaded = ScriptedEngine()

        def load(path: Path) -> Engine:
            if path.name == "broken.gguf":
                raise ModelError("not a GGUF model file: broken.gguf")
            return reloaded

        with pytest.raises(ModelError, match="broken.gguf"):
            await service.switch_engine(load, Path("/models/broken.gguf"))
        assert service.engine is reloaded
        sink = RecordingSink()
        assert await service.answer(await service.accept(ChatRef(2, "private"), "still there?"), sink)
        assert sink.final == reloaded.default_reply


async def test_the_chosen_model_is_remembered_under_the_same_configuration(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    configured, chosen = tmp_path / "a.gguf", tmp_path / "b.gguf"
    configured.write_bytes(b"GGUF")
    chosen.write_bytes(b"GGUF")
    async with open_runtime(make_settings(), engine=ScriptedEngine()) as runtime:
        from bot.store.database import sessions

        factory = sessions(runtime.database)
        assert await chosen_model(factory, configured) == configured
        await remember_model(factory, configured, chosen)
        assert await chosen_model(factory, configured) == chosen
        # The operator configured another model since: the configuration wins.
        assert await chosen_model(factory, tmp_path / "c.gguf") == tmp_path / "c.gguf"
        chosen.unlink()
        assert await chosen_model(factory, configured) == configured
