"""sendPhoto in the loopback Bot API fake, driven by a real python-telegram-bot Bot: Telegram's
rules for the upload and the caption, and how a photo message looks afterwards."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator, Iterator

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest

from tests.fakebotapi import MAX_CAPTION_UTF16, FakeBotAPI

pytestmark = pytest.mark.timeout(60)


def png(width: int, height: int) -> bytes:
    """A grey PNG, written by hand (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        yield api


@pytest.fixture
async def bot(fake: FakeBotAPI) -> AsyncIterator[Bot]:
    async with Bot(fake.token, base_url=f"{fake.base_url}/bot") as client:
        yield client


async def test_a_photo_upload_with_caption_and_button(bot: Bot, fake: FakeBotAPI) -> None:
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    image = png(64, 32)
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Switch", callback_data="m:x")]])
    sent = await bot.send_photo(chat["id"], image, caption="*chart*", parse_mode="MarkdownV2",
                                reply_markup=markup, filename="chart.png")
    assert sent.caption == "chart" and sent.caption_entities[0].type == "bold"
    assert sent.text is None
    assert (sent.photo[-1].width, sent.photo[-1].height) == (64, 32)
    [request] = fake.requests("sendPhoto")
    assert request.params["photo"] == {"filename": "chart.png", "size": len(image)}  # multipart
    [stored] = fake.bot_messages(chat)
    assert stored.photo is not None and stored.text == "chart"
    assert stored.reply_markup is not None
    assert fake.file_bytes(sent.photo[-1].file_id) == image
    again = await bot.send_photo(chat["id"], sent.photo[-1].file_id)  # by file_id: no upload
    assert again.photo[-1].file_id == sent.photo[-1].file_id and again.caption is None
    with pytest.raises(BadRequest, match="no text in the message to edit"):
        await bot.edit_message_text("now text", chat_id=chat["id"], message_id=sent.message_id)


async def test_telegram_refuses_what_it_refuses(bot: Bot, fake: FakeBotAPI) -> None:
    chat = fake.private_chat(fake.user("Bob", "bob"))
    await bot.send_photo(chat["id"], png(8, 8), caption="x" * MAX_CAPTION_UTF16)
    with pytest.raises(BadRequest, match="caption is too long"):
        await bot.send_photo(chat["id"], png(8, 8), caption="x" * (MAX_CAPTION_UTF16 + 1))
    with pytest.raises(BadRequest, match="Image_process_failed"):
        await bot.send_photo(chat["id"], b"not an image at all", filename="a.png")
    with pytest.raises(BadRequest, match="Photo_invalid_dimensions"):
        await bot.send_photo(chat["id"], png(2100, 100))
    with pytest.raises(BadRequest, match="Wrong file identifier"):
        await bot.send_photo(chat["id"], "AgACAgIAAxkBAAInowhere")
    assert len(fake.bot_messages(chat)) == 1
