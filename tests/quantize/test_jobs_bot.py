"""`/quantize` through the fake Bot API: admins only, progress edits, one job at a time,
recorded in the database, and reported as interrupted after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.llama.gguf_file import read_gguf_info
from bot.store.schema import QuantizeJobRow
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine
from tests.models.checkpoints import write_tiny_f16

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


@pytest.fixture
def f16_model(tmp_path: Path) -> Path:
    return write_tiny_f16(tmp_path, tmp_path / "models")


async def jobs_in_db(runner) -> list[QuantizeJobRow]:  # type: ignore[no-untyped-def]
    from bot.store.database import sessions

    async with sessions(runner.runtime.database)() as session:
        return list((await session.execute(select(QuantizeJobRow))).scalars())


async def test_admin_quantizes_with_progress_and_result(
    fake: FakeBotAPI, run_bot, f16_model: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import bot.quantize.jobs as jobs_module

    real = jobs_module.quantize_model_async
    release = asyncio.Event()

    def progress_shown() -> bool:
        return any("tensor" in t and "/" in t for t in texts(fake, group))

    async def held(*args, **kwargs):  # type: ignore[no-untyped-def]
        await release.wait()  # keep the job running until the test has tried a second one
        result = await real(*args, **kwargs)
        # A tiny model quantizes within one edit interval: let its progress show before the end.
        await fake.wait_for(progress_shown, timeout=10, what="a progress edit")
        return result

    monkeypatch.setattr(jobs_module, "quantize_model_async", held)
    root, member = fake.user("Root", "root"), fake.user("Mia", "mia")
    runner = await run_bot(ScriptedEngine(), admins=[root["id"]], models_dir=f16_model.parent,
                           edit_interval_group=0.2, edit_interval_private=0.2)
    group = fake.group_chat("Ops")
    fake.send_text(group, member, "/quantize q4_0 tiny-f16.gguf")
    await fake.wait_for(lambda: texts(fake, group), timeout=10)
    assert texts(fake, group) == ["Only the bot's admins can quantize models."]

    fake.send_text(group, root, "/quantize q4_0 tiny-f16.gguf")
    await fake.wait_for(lambda: any("queued" in t for t in texts(fake, group)), timeout=10)
    fake.send_text(group, root, "/quantize q8_0 tiny-f16.gguf")
    await fake.wait_for(lambda: any("already running" in t for t in texts(fake, group)), timeout=10)
    fake.send_text(group, root, "@alpaca_test_bot are you still there?")
    await fake.wait_for(
        lambda: "Hello from the scripted model." in texts(fake, group), timeout=10
    )  # the bot keeps answering chats meanwhile
    release.set()
    await fake.wait_for(lambda: any(t.startswith("✅") for t in texts(fake, group)), timeout=30)

    [progress] = [m for m in fake.bot_messages(group) if m.text.startswith("✅")]
    assert any("tensor" in old and "/" in old for old in progress.history)
    assert "tiny-f16.gguf" in progress.text and "tiny-q4_0.gguf" in progress.text
    assert "/model tiny-q4_0.gguf" in progress.text
    output = f16_model.parent / "tiny-q4_0.gguf"
    assert read_gguf_info(output).file_type_name == "Q4_0"
    [job] = await jobs_in_db(runner)
    assert (job.state, job.qtype, job.requested_by) == ("done", "q4_0", root["id"])
    assert job.size_after and job.size_before and job.size_after < job.size_before


async def test_bad_requests_get_clear_answers(fake: FakeBotAPI, run_bot, f16_model: Path) -> None:  # type: ignore[no-untyped-def]
    root = fake.user("Root", "root")
    await run_bot(ScriptedEngine(), admins=[root["id"]], models_dir=f16_model.parent)
    chat = fake.private_chat(root)
    fake.send_text(chat, root, "/quantize q9_9 tiny-f16.gguf")
    fake.send_text(chat, root, "/quantize q4_0 nothing-here.gguf")
    fake.send_text(chat, root, "/quantize")

    def answers() -> list[str]:
        # The chat's outbox sends answers that waited together as one message.
        return [part for text in texts(fake, chat) for part in text.split("\n\n")]

    await fake.wait_for(lambda: len(answers()) == 3, timeout=10)
    bad_type, missing, no_source = answers()
    assert bad_type.startswith("unknown quantization type 'q9_9'; choose one of: ")
    assert "q4_0 (2), q4_1 (3)" in bad_type
    assert "No model 'nothing-here.gguf'" in missing
    assert "quantize_source" in no_source


async def test_a_restart_mid_job_reports_it_interrupted(
    fake: FakeBotAPI, run_bot, f16_model: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import bot.quantize.jobs as jobs_module

    async def forever(*args, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()

    monkeypatch.setattr(jobs_module, "quantize_model_async", forever)
    root = fake.user("Root", "root")
    runner = await run_bot(ScriptedEngine(), admins=[root["id"]], quantize_source=f16_model,
                           models_dir=f16_model.parent)
    chat = fake.private_chat(root)
    fake.send_text(chat, root, "/quantize 3")
    await fake.wait_for(lambda: any("queued" in t for t in texts(fake, chat)), timeout=10)
    # Simulate a crash: the job row stays `running` (a clean stop would mark it interrupted).
    runner.jobs._task.cancel()  # type: ignore[union-attr]
    from sqlalchemy import update

    from bot.store.database import sessions

    await asyncio.sleep(0.1)
    async with sessions(runner.runtime.database)() as session:
        await session.execute(update(QuantizeJobRow).values(state="running"))
        await session.commit()
    partial = f16_model.parent / ".tiny-q4_1.gguf.0123abcd.part"
    partial.write_bytes(b"half")
    await runner.stop()

    await run_bot(ScriptedEngine(), admins=[root["id"]], quantize_source=f16_model,
                  models_dir=f16_model.parent)
    await fake.wait_for(lambda: any("interrupted" in t for t in texts(fake, chat)), timeout=10)
    note = [t for t in texts(fake, chat) if "interrupted" in t][0]
    assert note.startswith("⚠️ Quantization #1 (tiny-f16.gguf → q4_1) was interrupted")
    assert not partial.exists()
