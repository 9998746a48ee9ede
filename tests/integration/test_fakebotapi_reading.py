"""The fake Bot API sends photos, documents, captions, quotes and forwards as Telegram does:
python-telegram-bot reads them back, and the files download through getFile."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from telegram import Bot, Message, MessageOriginChannel, MessageOriginHiddenUser, MessageOriginUser

from bot.telegram.files import download, file_url
from tests.fakebotapi import FakeBotAPI
from tests.reading.files import text_image

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def bot(fake: FakeBotAPI) -> AsyncIterator[Bot]:
    api = f"{fake.base_url}/bot"
    async with Bot(fake.token, base_url=api, base_file_url=file_url(api)) as client:
        yield client


async def test_a_photo_comes_in_sizes_smallest_first_each_downloadable(
    fake: FakeBotAPI, bot: Bot
) -> None:
    alice = fake.user("Alice")
    sent = Message.de_json(fake.send_photo(fake.private_chat(alice), alice,
                                           text_image(["hello"], size=(1600, 900)),
                                           caption="@alpaca_test_bot read this"), bot)
    sizes = [(p.width, p.height) for p in sent.photo]
    assert sizes == [(90, 51), (320, 180), (800, 450), (1280, 720)]
    assert sent.caption == "@alpaca_test_bot read this"
    assert [e.type for e in sent.caption_entities] == ["mention"]
    largest = await download(bot, sent.photo[-1].file_id, size=sent.photo[-1].file_size)
    assert largest[:2] == b"\xff\xd8" and len(largest) == sent.photo[-1].file_size
    small = Message.de_json(fake.send_photo(fake.private_chat(alice), alice,
                                            text_image(["x"], size=(200, 100))), bot)
    assert [(p.width, p.height) for p in small.photo] == [(90, 45), (200, 100)]


async def test_a_document_with_its_name_type_and_size(fake: FakeBotAPI, bot: Bot) -> None:
    group, bob = fake.group_chat(), fake.user("Bob")
    sent = Message.de_json(fake.send_document(group, bob, b"%PDF-1.4 ...", file_name="a.pdf",
                                              mime_type="application/pdf"), bot)
    assert sent.document is not None and sent.document.file_name == "a.pdf"
    assert sent.document.mime_type == "application/pdf" and sent.document.file_size == 12
    assert await download(bot, sent.document.file_id) == b"%PDF-1.4 ..."
    assert fake.downloads()[-1].endswith("/documents/file_1.pdf")


async def test_quotes_and_forward_origins(fake: FakeBotAPI, bot: Bot) -> None:
    alice, carol = fake.user("Alice"), fake.user("Carol")
    chat = fake.private_chat(alice)
    original = fake.send_text(chat, alice, "Llamas hum when they are curious.")
    reply = Message.de_json(fake.send_text(chat, alice, "why?", reply_to=original,
                                           quote="hum when"), bot)
    assert reply.quote is not None and reply.quote.text == "hum when"
    assert reply.quote.position == 7 and reply.quote.is_manual
    assert reply.reply_to_message is not None
    with pytest.raises(ValueError, match="quote"):
        fake.send_text(chat, alice, "x", reply_to=original, quote="not there")
    forwarded = Message.de_json(fake.send_text(chat, alice, "Meet at 5",
                                               forward_origin=fake.origin(carol)), bot)
    assert isinstance(forwarded.forward_origin, MessageOriginUser)
    assert forwarded.forward_origin.sender_user.first_name == "Carol"
    hidden = Message.de_json(fake.send_text(chat, alice, "psst",
                                            forward_origin=fake.origin({"hidden": "Dave"})), bot)
    assert isinstance(hidden.forward_origin, MessageOriginHiddenUser)
    channel = {"id": -100777, "type": "channel", "title": "Llama News"}
    post = Message.de_json(fake.send_text(chat, alice, "News!", forward_origin=fake.origin(
        channel, message_id=42)), bot)
    assert isinstance(post.forward_origin, MessageOriginChannel)
    assert post.forward_origin.chat.title == "Llama News" and post.forward_origin.message_id == 42
