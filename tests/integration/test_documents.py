"""Documents through the fake Bot API, on SQLite and PostgreSQL: read into the chat's passages
and acknowledged, the passages most relevant to each question given to the model within
`document_tokens` (labelled to cite), /docs, /reset, /forget and the retention period; and each
bad input answered in one line, nothing lost."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from bot.store.schema import DocumentRow, PassageRow, utcnow
from tests.fakebotapi import MAX_DOWNLOAD_BYTES, FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine
from tests.reading.files import (
    encrypted_pdf,
    scanned_pdf,
    text_image,
    text_pdf,
    word_document,
    zip_bomb,
)

pytestmark = pytest.mark.timeout(240)

REPORT = [
    "Annual report of the Llama Farm\nWe keep 40 llamas and 12 alpacas on the farm.",
    "Finances\nThe wool sales brought 4,200 euros this year.\nFeed cost 1,900 euros.",
    "Staff\nAnn shears the alpacas every May. Bob drives the tractor.",
]
PASSAGES = "[passages of this chat's documents that may help, each labelled to cite:]"


async def count(runner: Any, model: type, chat_id: int | None = None) -> int:
    async with runner.runtime.sessions() as session:
        query = select(func.count()).select_from(model)
        if chat_id is not None and model is DocumentRow:
            query = query.where(DocumentRow.chat_id == chat_id)
        return int((await session.execute(query)).scalar_one())


async def test_a_pdf_sent_alone_is_acknowledged_and_questions_draw_on_it(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    runner = await run_bot(engine)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    fake.send_document(chat, alice, text_pdf(REPORT), file_name="report.pdf",
                       mime_type="application/pdf")
    await fake.wait_for(lambda: texts(fake, chat), timeout=20)
    assert texts(fake, chat) == ["📄 Read report.pdf (3 pages); ask me about it."]
    assert engine.history == []  # no reply of the model to a document alone
    engine.enqueue("4,200 euros.")
    fake.send_text(chat, alice, "How much did the wool sales bring?")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=20)
    prompt = engine.prompts()[0]
    assert PASSAGES in prompt
    assert "[report.pdf, page 2]\n> Finances\n> The wool sales brought 4,200 euros" in prompt
    assert "Bob drives the tractor" not in prompt  # only the relevant passages
    engine.enqueue("Sunny.")
    fake.send_text(chat, alice, "What is the weather like today?")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 3, timeout=20)
    assert PASSAGES not in engine.prompts()[1]  # nothing of the document matches
    fake.send_text(chat, alice, "/docs")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 4, timeout=20)
    listing = texts(fake, chat)[-1]
    assert listing.startswith("Documents I draw on here (until /reset):")
    assert "📄 report.pdf (3 pages)" in listing
    assert await count(runner, PassageRow) >= 3


async def test_a_caption_asks_about_its_document_and_a_reply_about_the_replied_one(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    await run_bot(engine)
    group = fake.group_chat("Farm")
    bob = fake.user("Bob", "bob")
    fake.send_document(group, bob, text_pdf(["not for the bot"]), file_name="other.pdf")
    engine.enqueue("Ann does.")
    plan = fake.send_document(group, bob, word_document(
        ["Shearing plan", "Ann shears the alpacas in May.", "羊驼每年五月剪毛。"]),
        file_name="plan.docx", caption="@alpaca_test_bot who shears the alpacas?")
    await fake.wait_for(lambda: texts(fake, group), timeout=20)
    prompt = engine.prompts()[0]
    assert "Bob: who shears the alpacas?" in prompt
    assert '[about the document "plan.docx", in this chat\'s documents]' in prompt
    assert "[plan.docx, paragraphs 1-3]" in prompt and "Ann shears the alpacas in May." in prompt
    assert len(fake.downloads()) == 1  # the document not addressed to the bot was not read
    engine.enqueue("It is a shearing plan.")
    fake.send_text(group, bob, "@alpaca_test_bot 总结一下", reply_to=plan)
    await fake.wait_for(lambda: len(texts(fake, group)) == 2, timeout=20)
    prompt = engine.prompts()[1].rsplit("总结一下", 1)[1]
    assert "[plan.docx, paragraphs 1-3]" in prompt  # its beginning: no word of it was asked
    assert len(fake.downloads()) == 1  # read once, found again by its message


async def test_gbk_text_and_chinese_questions(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    await run_bot(engine)
    alice = fake.user("Alice", "alice", language_code="zh-hans")
    chat = fake.private_chat(alice)
    notes = "会议纪要\n预算：四千二百元\n负责人：王伟\n下次会议：三月五日"
    fake.send_document(chat, alice, notes.encode("gbk"), file_name="纪要.txt",
                       mime_type="text/plain")
    await fake.wait_for(lambda: texts(fake, chat), timeout=20)
    assert texts(fake, chat) == ["📄 已读取 纪要.txt（24 字）；有问题尽管问我。"]
    engine.enqueue("四千二百元。")
    fake.send_text(chat, alice, "预算是多少？")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=20)
    assert "[纪要.txt, lines 1-4]\n> 会议纪要\n> 预算：四千二百元" in engine.prompts()[0]


async def test_a_200_page_document_costs_no_more_than_document_tokens(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    await run_bot(engine, document_tokens=300)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    pages = [f"Chapter {n}\n" + f"Llamas graze on the plateau in region {n}. " * 12
             for n in range(1, 201)]
    pages[136] += "\nThe secret password of the vault is OPEN-SESAME-137."
    fake.send_document(chat, alice, text_pdf(pages), file_name="book.pdf")
    await fake.wait_for(lambda: texts(fake, chat), timeout=60)
    assert texts(fake, chat) == ["📄 Read book.pdf (200 pages); ask me about it."]
    engine.enqueue("OPEN-SESAME-137.")
    fake.send_text(chat, alice, "What is the secret password of the vault?")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=30)
    prompt = engine.prompts()[0]
    block = prompt[prompt.index(PASSAGES):]
    block = block[: block.index("\n\n")] if "\n\n" in block else block
    assert "[book.pdf, page 137]" in block and "OPEN-SESAME-137" in block
    tokens = len(block) // 4 + 1  # the scripted engine's count
    assert tokens <= 300
    assert len(prompt) // 4 < 600  # the question, the frame and at most the budget


async def test_reset_puts_documents_aside_and_forget_and_retention_delete_them(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, bot_settings: Any
) -> None:
    runner = await run_bot(engine)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    fake.send_document(chat, alice, text_pdf(REPORT), file_name="report.pdf")
    await fake.wait_for(lambda: texts(fake, chat), timeout=20)
    fake.send_text(chat, alice, "/reset")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=20)
    fake.send_text(chat, alice, "/docs")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 3, timeout=20)
    assert texts(fake, chat)[-1].startswith("No documents here.")
    engine.enqueue("I do not know.")
    fake.send_text(chat, alice, "How much did the wool sales bring?")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 4, timeout=20)
    assert PASSAGES not in engine.prompts()[0]
    assert await count(runner, DocumentRow) == 1  # stored until /forget
    fake.send_document(chat, alice, b"Llamas hum when they are curious.", file_name="hum.txt")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 5, timeout=20)
    fake.send_text(chat, alice, "/forget")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 6, timeout=20)
    fake.send_text(chat, alice, "/forget yes")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 7, timeout=20)
    assert texts(fake, chat)[-1].startswith("Forgotten:")
    assert await count(runner, DocumentRow) == 0 and await count(runner, PassageRow) == 0
    # The retention period deletes documents older than it, with their passages.
    fake.send_document(chat, alice, b"Alpacas live in herds.", file_name="herd.txt")
    fake.send_document(chat, alice, b"Llamas spit.", file_name="spit.txt")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 9, timeout=20)
    async with runner.runtime.sessions() as session:
        await session.execute(update(DocumentRow).where(DocumentRow.name == "herd.txt")
                              .values(created_at=utcnow() - timedelta(days=10)))
        await session.commit()
    retention = runner.runtime.service.retention
    retention.days = 3
    await retention.prune()
    async with runner.runtime.sessions() as session:
        names = (await session.execute(select(DocumentRow.name))).scalars().all()
        passages = (await session.execute(select(PassageRow.text))).scalars().all()
    assert names == ["spit.txt"] and passages == ["Llamas spit."]


BAD_FILES = [
    ("scan.pdf", scanned_pdf(), "no text layer"),
    ("locked.pdf", encrypted_pdf(), "password"),
    ("tool.bin", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, "not text"),
    ("bomb.docx", zip_bomb(), "zip bomb"),
    ("fake.docx", b"this is no zip at all", "not even a zip"),
    ("menu.txt", "Crème brûlée, café au lait, déjà vu".encode("latin-1"), "encoding"),
]


@pytest.mark.parametrize(("name", "data", "says"), BAD_FILES)
async def test_bad_input_is_one_clear_line_and_nothing_is_stored(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any, name: str, data: bytes, says: str
) -> None:
    runner = await run_bot(engine)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    fake.send_document(chat, alice, data, file_name=name, caption="what is in it?")
    await fake.wait_for(lambda: texts(fake, chat), timeout=30)
    [answer] = texts(fake, chat)
    assert says in answer and "\n" not in answer
    assert engine.history == [] and await count(runner, DocumentRow) == 0
    # The chat goes on as before.
    engine.enqueue("Fine.")
    fake.send_text(chat, alice, "hello")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=20)


async def test_a_file_over_20_mb_and_more_text_than_kept(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    runner = await run_bot(engine, document_max_chars=2000)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    fake.send_document(chat, alice, b"x", file_name="huge.pdf", size=MAX_DOWNLOAD_BYTES + 1)
    await fake.wait_for(lambda: texts(fake, chat), timeout=20)
    assert "too big" in texts(fake, chat)[0] or "20 MB" in texts(fake, chat)[0]
    assert fake.downloads() == []
    long_text = "".join(f"Line {n}: llamas and alpacas.\n" for n in range(1, 400)).encode()
    fake.send_document(chat, alice, long_text, file_name="long.txt")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=20)
    ack = texts(fake, chat)[1]
    assert ack.startswith("📄 Read long.txt (")
    assert "I read its first 2,000 characters" in ack
    async with runner.runtime.sessions() as session:
        row = (await session.execute(select(DocumentRow))).scalar_one()
    assert row.truncated and row.chars == 2000


async def test_a_picture_sent_as_a_file_is_read_like_a_photo(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot: Any
) -> None:
    await run_bot(engine)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    engine.enqueue("Your disk is full.")
    fake.send_document(chat, alice, text_image(["No space left on device"]),
                       file_name="screenshot.png", mime_type="image/png", caption="help?")
    await fake.wait_for(lambda: texts(fake, chat), timeout=60)
    assert "help?\n[text read from the image:]\n> " in engine.prompts()[0]
    assert "space" in engine.prompts()[0]
