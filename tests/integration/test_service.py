"""The chat service on real SQLite with a scripted model: concurrency and switching models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.chat.switching import chosen_model, remember_model
from bot.core.knobs import BY_COMMAND
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
            runtime.service.chat_settings.change(chat, BY_COMMAND["temp"], "0.5"),
            runtime.service.chat_settings.change(chat, BY_COMMAND["top_k"], "10"),
            runtime.service.chat_settings.set_system(chat, "Be brief."),
            runtime.service.conversation.accept(chat, "hello"),
        )
        assert answers[0] == "--temp set to 0.5 for this chat."
        params = await runtime.service.chat_settings.params(chat)
        assert (params.temp, params.top_k) == (0.5, 10)


async def test_switching_models_waits_for_replies_and_clamps_settings(make_settings) -> None:  # type: ignore[no-untyped-def]
    first = ScriptedEngine(n_ctx=4096, n_ctx_train=4096, delay=0.02)
    first.enqueue(" ".join(["word"] * 40))
    small = ScriptedEngine(n_ctx=1024, n_ctx_train=1024)
    async with open_runtime(make_settings(max_ctx=4096), engine=first) as runtime:
        service = runtime.service
        roomy = ChatRef(1, "private", "Roomy")
        await service.chat_settings.change(roomy, BY_COMMAND["ctx"], "4096")
        await service.chat_settings.change(roomy, BY_COMMAND["n"], "1000")
        sink = RecordingSink()
        accepted = await service.conversation.accept(roomy, "long one")
        reply = asyncio.create_task(service.conversation.write_reply(accepted, sink))
        await first.started.wait()
        loaded: list[Path] = []

        def load(path: Path) -> Engine:
            loaded.append(path)
            assert first.running == 0, "the reply in progress must finish before the switch"
            return small

        await service.running_model.replace(load, Path("/models/small.gguf"))
        changes = await service.chat_settings.clamp_all()
        assert (await reply) is not None and sink.final == " ".join(["word"] * 40)
        assert loaded == [Path("/models/small.gguf")]
        assert service.running_model.engine is small
        assert changes == [
            "Roomy: /ctx 4096 → 1024, /n 1000 → 960",
            "other chats: /ctx 2048 → 1024 (the configured default is larger than this model "
            "allows)",
        ]
        params = await service.chat_settings.params(roomy)
        assert (params.n_ctx, params.n_predict) == (1024, 960)
        assert "(-c) = 1024" in await service.overview.text(roomy)


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
            await service.running_model.replace(load, Path("/models/broken.gguf"))
        assert service.running_model.engine is reloaded
        sink = RecordingSink()
        accepted = await service.conversation.accept(ChatRef(2, "private"), "still there?")
        assert await service.conversation.write_reply(accepted, sink)
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
