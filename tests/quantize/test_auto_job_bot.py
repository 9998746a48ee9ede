"""`/quantize auto` through the fake Bot API on an f16 written back from the demo model: bot
admins only, one progress message edited as it goes, the bot answering meanwhile, the table,
the chart as a photo, the "Switch to …" button doing what /model does, /quantize cancel, and a
restart reporting a job it cut off."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.engine.base import Engine, ModelInfo
from bot.models.quantize import quantize_model
from bot.store.schema import QuantizeJobRow
from tests.conftest import DATABASES
from tests.cpu import THREADS
from tests.fakebotapi import FakeBotAPI, StoredMessage, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

SETTINGS = {"slots": 1, "max_ctx": 256, "ctx": 256, "n_predict": 64, "threads": THREADS,
            "edit_interval_private": 0.2, "edit_interval_group": 0.2}


class NamedEngine(ScriptedEngine):
    """The scripted engine, reporting the model file it was "loaded" from."""

    def __init__(self, path: Path) -> None:
        super().__init__(n_ctx=256, n_ctx_train=8192)
        self._info = ModelInfo(path=path, name=path.stem, n_ctx_train=8192, n_ctx=256,
                               chat_template=None, bos_token="<s>", eos_token="</s>")


@pytest.fixture
def database_kind(request: pytest.FixtureRequest) -> str:
    """SQLite for the runs on the model (they are slow, and the job's rows are plain); the
    restart test runs on every database."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="module")
def f16_master(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("f16") / "demo-f16.gguf"
    quantize_model(demo_model, path, "f16", allow_requantize=True)
    return path


@pytest.fixture
def models(f16_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import bot.quantize.auto_job as auto_job

    monkeypatch.setattr(auto_job, "PERPLEXITY_CTX", 128)  # short runs: 2 chunks of 128
    monkeypatch.setattr(auto_job, "PERPLEXITY_CHUNKS", 2)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / f16_master.name).hardlink_to(f16_master)
    return folder


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def jobs_in_db(runner) -> list[QuantizeJobRow]:  # type: ignore[no-untyped-def]
    from bot.store.database import sessions

    async with sessions(runner.runtime.database)() as session:
        return list((await session.execute(select(QuantizeJobRow))).scalars())


# Slow by nature: a real `quantize --auto` run (several quantizations, each measured) through
# the bot, then the chart and the switch by button.
@pytest.mark.model
async def test_auto_quantization_reports_table_chart_and_switches_by_button(
    fake: FakeBotAPI, run_bot, models: Path
) -> None:  # type: ignore[no-untyped-def]
    root, member = fake.user("Root", "root"), fake.user("Mia", "mia")
    loaded: list[Path] = []

    def load(path: Path) -> Engine:
        loaded.append(path)
        return NamedEngine(path)

    runner = await run_bot(NamedEngine(models / "demo-f16.gguf"), load=load,
                           admins=[root["id"]], models_dir=models, **SETTINGS)
    group = fake.group_chat("Ops")
    fake.send_text(group, member, "/quantize auto q4_0 q8_0 demo-f16.gguf")
    await fake.wait_for(lambda: texts(fake, group), timeout=10)
    assert texts(fake, group) == ["Only the bot's admins can quantize models."]

    fake.send_text(group, root, "/quantize auto q4_0 q8_0 demo-f16.gguf")
    await fake.wait_for(lambda: any("step" in t for t in texts(fake, group)), timeout=60)
    fake.send_text(group, root, "/quantize q4_1 demo-f16.gguf")
    fake.send_text(group, root, "@alpaca_test_bot still there?")
    await fake.wait_for(lambda: "Hello from the scripted model." in texts(fake, group),
                        timeout=30)  # the bot answers chats while the job runs
    assert any("already running (demo-f16.gguf → auto (q4_0, q8_0), step" in t
               for t in texts(fake, group))

    def done() -> StoredMessage | None:
        return next((m for m in fake.bot_messages(group) if m.photo is not None), None)

    photo = await fake.wait_for(done, timeout=240)
    [progress] = [m for m in fake.bot_messages(group) if m.text.startswith("✅")]
    # One message, edited as it went: queued, then steps with the type, tensor or chunk, times.
    assert progress.history[0].startswith("Auto-quantization #1 queued: demo-f16.gguf → q4_0, q8_0")
    steps = [t for t in progress.history if " step " in t]
    assert any("step 1/4 — q4_0 quantize, tensor " in t and "elapsed" in t for t in steps)
    # Edits coalesce (the latest text wins an interval): a short last step may never show, so
    # the steps are checked in order and up to the second type, not each one.
    seen = [int(t.split(" step ")[1].split("/")[0]) for t in steps]
    assert seen == sorted(seen) and seen[-1] >= 3
    assert any("— q8_0 quantize, tensor " in t or "— q8_0 measure, chunk " in t for t in steps)
    assert any("left" in t and "estimated" in t for t in steps)
    # The table (a code block), the choice, the file.
    assert progress.entities and progress.entities[0]["type"] == "pre"
    lines = progress.text.splitlines()
    assert any(line.startswith("type") and "PPL ± error" in line for line in lines)
    q4, q8 = (next(line for line in lines if line.startswith(t)) for t in ("q4_0", "q8_0"))
    ppl = {t: float(line.split()[5]) for t, line in (("q4_0", q4), ("q8_0", q8))}
    assert ppl["q8_0"] < ppl["q4_0"]
    chosen = "q8_0" if q8.endswith("✓") else "q4_0"
    assert (q4 if chosen == "q4_0" else q8).endswith("✓")
    name = f"demo-{chosen}.gguf"
    assert f"File: {models / name}" in progress.text
    assert names(models) == sorted(["demo-f16.gguf", name, "demo-auto.json", "demo-auto.png"])
    # The chart, uploaded as a photo, with the button under it.
    assert len(photo.text) <= 1024 and f"Chosen: {chosen}" in photo.text
    assert fake.file_bytes(photo.photo[-1]["file_id"])[:8] == b"\x89PNG\r\n\x1a\n"
    [[button]] = photo.reply_markup["inline_keyboard"]  # type: ignore[index]
    assert button["text"] == f"Switch to {name}"
    [job] = await jobs_in_db(runner)
    assert (job.state, job.qtype, job.target) == ("done", "auto", str(models / name))

    # A member's press is refused, as /model is; the admin's switches the model.
    refused = fake.press(photo, f"Switch to {name}", member)
    await fake.wait_for(lambda: fake.callback_query(refused).answered, timeout=10)
    assert fake.callback_query(refused).text == "Only the bot's admins can list and switch models."
    assert loaded == []
    pressed = fake.press(photo, f"Switch to {name}", root)
    await fake.wait_for(lambda: any(t.startswith("Now running") for t in texts(fake, group)),
                        timeout=20)
    assert fake.callback_query(pressed).text == f"Switching to {name}…"
    assert loaded == [models / name]
    assert any(t.startswith(f"Now running {name}") for t in texts(fake, group))


@pytest.mark.model
# Cancelling aborts llama.cpp in the middle of a perplexity pass, which llama.cpp logs as
# failed graph computations.
@pytest.mark.log_errors(r"^ERROR llama\.cpp: ")
async def test_cancel_stops_the_job_and_removes_partial_files(
    fake: FakeBotAPI, run_bot, models: Path
) -> None:  # type: ignore[no-untyped-def]
    root = fake.user("Root", "root")
    runner = await run_bot(ScriptedEngine(), admins=[root["id"]], models_dir=models, **SETTINGS)
    chat = fake.private_chat(root)
    fake.send_text(chat, root, "/quantize cancel")
    await fake.wait_for(lambda: texts(fake, chat), timeout=10)
    assert texts(fake, chat) == ["Nothing to cancel: no quantization is running."]
    fake.send_text(chat, root, "/quantize auto q4_0 q8_0 demo-f16.gguf")
    await fake.wait_for(
        lambda: any("q4_0 measure" in t for m in fake.bot_messages(chat) for t in m.history),
        timeout=120)
    fake.send_text(chat, root, "/quantize cancel")
    await fake.wait_for(lambda: any(t.startswith("⏹") for t in texts(fake, chat)), timeout=60)
    assert "Cancelling quantization #1 (demo-f16.gguf → auto (q4_0, q8_0))…" in texts(fake, chat)
    assert names(models) == ["demo-f16.gguf"]
    [job] = await jobs_in_db(runner)
    assert job.state == "cancelled"
    assert not any(m.photo for m in fake.bot_messages(chat))


@pytest.mark.parametrize("database_kind", DATABASES, indirect=True)
async def test_a_restart_removes_what_an_auto_job_left(
    fake: FakeBotAPI, run_bot, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from bot.store.database import sessions
    from bot.store.jobs import add_quantize_job

    models = tmp_path / "models"
    work = models / ".auto-demo.0123abcd.work"
    work.mkdir(parents=True)
    (work / "demo-q4_0.gguf").write_bytes(b"half")
    root = fake.user("Root", "root")
    chat = fake.private_chat(root)
    runner = await run_bot(ScriptedEngine(), admins=[root["id"]], models_dir=models)
    async with sessions(runner.runtime.database)() as session:
        await add_quantize_job(session, requested_by=root["id"], chat_id=chat["id"],
                               source=str(models / "demo-f16.gguf"), target=str(work),
                               qtype="auto")
        await session.commit()
    await runner.stop()  # as if the bot had crashed with the job running
    async with sessions(runner.runtime.database)() as session:
        await session.execute(update(QuantizeJobRow).values(state="running"))
        await session.commit()
    await run_bot(ScriptedEngine(), admins=[root["id"]], models_dir=models)
    await fake.wait_for(lambda: any("interrupted" in t for t in texts(fake, chat)), timeout=10)
    assert texts(fake, chat)[-1].startswith(
        "⚠️ Quantization #1 (demo-f16.gguf → auto) was interrupted")
    await asyncio.sleep(0)
    assert not work.exists()
