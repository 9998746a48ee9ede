"""What people send besides words, through the fake Bot API as Telegram sends it: replies and
quotes (with who wrote them), forwards in private chats, and photos read by the real OCR model
(English and Chinese text drawn with a CJK font), with the text kept with the question."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bot.chat.export import export_chat
from bot.engine.base import CancelToken, Queued, TakesTurns
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine
from tests.reading.files import blank_image, text_image

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def database_kind() -> str:
    """What reaches the prompt does not depend on the database (the store's part runs on both
    in test_documents): SQLite only."""
    return "sqlite"


async def test_a_reply_to_someone_gives_the_model_their_message_and_name(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    await run_bot(engine)
    group = fake.group_chat("Travellers")
    alice, bob = fake.user("Alice", "alice"), fake.user("Bob", "bob")
    original = fake.send_text(group, alice, "Bonjour à tous, le train part à 8 heures.")
    engine.enqueue("Hello everyone, the train leaves at 8.")
    fake.send_text(group, bob, "@alpaca_test_bot translate this", reply_to=original)
    await fake.wait_for(lambda: texts(fake, group), timeout=10)
    prompt = engine.prompts()[0]
    assert "Bob: translate this" in prompt
    assert "[in reply to a message by Alice:]" in prompt
    assert "> Bonjour à tous, le train part à 8 heures." in prompt


async def test_a_quote_gives_only_the_part_quoted(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    await run_bot(engine)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    engine.enqueue("Llamas hum.")
    fake.send_text(chat, alice, "Tell me about llamas")
    await fake.wait_for(lambda: texts(fake, chat), timeout=10)
    answer = fake.bot_messages(chat)[0]
    engine.enqueue("Because they are calm.")
    fake.send_text(chat, alice, "why?", reply_to=answer.message_id, quote="hum")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=10)
    prompt = engine.prompts()[1]
    assert ("why?\n[in reply to your (the assistant's) earlier message, quoting this part:]\n"
            "> hum") in prompt


async def test_ask_as_a_reply_in_a_group(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    await run_bot(engine)
    group = fake.group_chat()
    alice, bob = fake.user("Alice", "alice"), fake.user("Bob", "bob")
    original = fake.send_text(group, alice, "SELECT * FROM users WHERE 1=1; DROP TABLE x")
    engine.enqueue("It deletes a table.")
    fake.send_text(group, bob, "/ask is this safe?", reply_to=original)
    await fake.wait_for(lambda: texts(fake, group), timeout=10)
    prompt = engine.prompts()[0]
    assert "Bob: is this safe?" in prompt
    assert "> SELECT * FROM users WHERE 1=1; DROP TABLE x" in prompt
    engine.enqueue("A greeting.")
    fake.send_text(group, bob, "/ask", reply_to=fake.send_text(group, alice, "Grüezi mitenand"))
    await fake.wait_for(lambda: len(texts(fake, group)) == 2, timeout=10)
    prompt = engine.prompts()[1]
    assert prompt.count("Grüezi mitenand") == 1  # the replied text is the question, once
    assert "[in reply to a message by Alice:]\n  > Grüezi mitenand" in prompt


async def test_a_forward_in_private_is_read_with_its_origin(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    await run_bot(engine)
    alice, carol = fake.user("Alice", "alice"), fake.user("Carol", "carol")
    chat = fake.private_chat(alice)
    engine.enqueue("Carol wants to meet.")
    fake.send_text(chat, alice, "Meeting moved to Friday 3pm",
                   forward_origin=fake.origin(carol))
    await fake.wait_for(lambda: texts(fake, chat), timeout=10)
    assert "[a message forwarded from Carol:]\n> Meeting moved to Friday 3pm" in (
        engine.prompts()[0])


async def test_a_screenshot_is_read_and_kept_with_its_question(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    runner = await run_bot(engine)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    image = text_image(["ERROR: connection refused on port 5432", "数据库连接失败，请检查配置"])
    engine.enqueue("PostgreSQL is not running.")
    fake.send_photo(chat, alice, image, caption="what does this mean?")
    await fake.wait_for(lambda: texts(fake, chat), timeout=60)
    prompt = engine.prompts()[0]
    assert "what does this mean?\n[text read from the image:]\n> " in prompt
    assert "connection refused" in prompt and "5432" in prompt
    assert "数据库连接失败" in prompt
    # Only the largest size was downloaded, through getFile and the file URL.
    [download] = fake.downloads()
    assert "/photos/" in download
    # The text read is stored with the question, and export shows it (not the picture).
    assert runner.runtime is not None
    sessions = runner.runtime.sessions
    exported = [json.loads(line) for line in
                (await export_chat(sessions, chat["id"], "jsonl")).splitlines()]
    question = exported[0]
    assert question["text"] == "what does this mean?"
    assert question["context"][0]["kind"] == "image"
    assert "数据库连接失败" in question["context"][0]["text"]
    markdown = await export_chat(sessions, chat["id"], "md")
    assert "text read from the image" in markdown and "数据库连接失败" in markdown


async def test_a_photo_alone_in_private_and_a_reply_to_one(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    await run_bot(engine)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    engine.enqueue("A menu.")
    photo = fake.send_photo(chat, alice, text_image(["MENU", "Noodles 12", "Tea 3"]))
    await fake.wait_for(lambda: texts(fake, chat), timeout=60)
    assert engine.prompts()[0].count("[text read from the image:]") == 1
    assert "Noodles 12" in engine.prompts()[0]
    engine.enqueue("Tea costs 3.")
    fake.send_text(chat, alice, "how much is tea?", reply_to=photo)
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=60)
    last = engine.prompts()[1].rsplit("how much is tea?", 1)[1]
    assert "[text read from the image in a message by Alice:]" in last and "Tea 3" in last


async def test_a_picture_without_text_is_answered_honestly(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    await run_bot(engine)
    alice = fake.user("Alice", "alice", language_code="zh-hans")
    chat = fake.private_chat(alice)
    fake.send_photo(chat, alice, blank_image(), caption="what is in this picture?")
    await fake.wait_for(lambda: texts(fake, chat), timeout=60)
    assert texts(fake, chat) == [
        "我在这张图片里没有找到文字。我能读出图片里的文字（截图、招牌、页面），但还看不懂图像本身。"]
    assert engine.history == []


async def test_group_photos_count_only_when_for_the_bot(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    await run_bot(engine)
    group = fake.group_chat()
    bob = fake.user("Bob", "bob")
    fake.send_photo(group, bob, text_image(["holiday pictures"]), caption="look at this")
    engine.enqueue("It says: open daily.")
    fake.send_photo(group, bob, text_image(["OPEN DAILY 9-17"]),
                    caption="@alpaca_test_bot what does the sign say?")
    await fake.wait_for(lambda: texts(fake, group), timeout=60)
    prompt = engine.prompts()[0]
    assert "Bob: what does the sign say?" in prompt and "DAILY" in prompt
    assert "holiday" not in prompt
    assert len(fake.downloads()) == 1
    engine.enqueue("It says: closed.")
    fake.send_photo(group, bob, text_image(["CLOSED"]), caption="/ask is it open?")
    await fake.wait_for(lambda: len(texts(fake, group)) == 2, timeout=60)
    assert "Bob: is it open?" in engine.prompts()[1] and "CLOSED" in engine.prompts()[1]


class TurnTakingEngine(ScriptedEngine):
    """The scripted engine, sharing this CPU: other work asks it for a turn (`TakesTurns`),
    and each turn is recorded with what ran inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.turns: list[tuple[str, str | None]] = []
        self.inside = 0

    @contextlib.asynccontextmanager
    async def turn(self, *, chat_key: str, cancel: CancelToken, share: str | None = None,
                   on_place: Callable[[Queued], Awaitable[None]] | None = None
                   ) -> AsyncIterator[None]:
        self.turns.append((chat_key, share))
        self.inside += 1
        try:
            yield
        finally:
            self.inside -= 1


async def test_reading_a_picture_or_a_document_takes_a_fair_turn(
    fake: FakeBotAPI, run_bot
) -> None:
    engine = TurnTakingEngine()
    assert isinstance(engine, TakesTurns)
    await run_bot(engine)
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    engine.enqueue("A sign.", "Noted.")
    fake.send_photo(chat, alice, text_image(["EXIT"]), caption="what is it?")
    await fake.wait_for(lambda: texts(fake, chat), timeout=60)
    fake.send_document(chat, alice, b"Llamas hum.", file_name="hum.txt", caption="and this?")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=60)
    key = str(chat["id"])
    assert engine.turns == [(key, key), (key, key)] and engine.inside == 0
