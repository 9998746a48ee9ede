"""Downloading what people send (`bot.telegram.files`) from the fake Bot API, which keeps
Telegram's rules: getFile, downloads from the file URL, the 20 MB limit and its error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import unquote

import pytest
from telegram import Bot, Message

from bot.telegram.files import (
    TELEGRAM_DOWNLOAD_LIMIT,
    DownloadFailed,
    FileTooBig,
    download,
    file_url,
)
from tests.fakebotapi import FILE_TOO_BIG, MAX_DOWNLOAD_BYTES, FakeBotAPI

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def bot(fake: FakeBotAPI) -> AsyncIterator[Bot]:
    api = f"{fake.base_url}/bot"
    async with Bot(fake.token, base_url=api, base_file_url=file_url(api)) as client:
        yield client


def test_the_file_url_follows_the_api_url_unless_given() -> None:
    assert file_url("https://api.telegram.org/bot") == "https://api.telegram.org/file/bot"
    assert file_url("http://127.0.0.1:8081/bot/") == "http://127.0.0.1:8081/file/bot"
    assert file_url("http://tg.lan/api") == "http://tg.lan/api/file"
    assert file_url("http://tg.lan/bot", "http://files.lan/file/bot/") == "http://files.lan/file/bot"
    assert TELEGRAM_DOWNLOAD_LIMIT == MAX_DOWNLOAD_BYTES == 20 * 1024 * 1024


async def test_a_voice_note_is_downloaded_as_telegram_serves_it(fake: FakeBotAPI, bot: Bot) -> None:
    alice = fake.user("Alice")
    sent = fake.send_voice(fake.private_chat(alice), alice, b"OggS voice bytes", duration=3)
    message = Message.de_json(sent, bot)
    assert message.voice is not None and message.voice.to_dict()["duration"] == 3
    assert message.voice.mime_type == "audio/ogg"
    data = await download(bot, message.voice.file_id, size=message.voice.file_size)
    assert data == b"OggS voice bytes"
    [path] = fake.downloads()
    assert unquote(path) == f"/file/bot{fake.token}/voice/file_1.oga"
    [request] = fake.requests("getFile")
    assert request.params["file_id"] == message.voice.file_id


async def test_audio_and_round_videos_arrive_as_telegram_sends_them(fake: FakeBotAPI, bot: Bot) -> None:
    group, bob = fake.group_chat(), fake.user("Bob")
    audio = Message.de_json(fake.send_audio(group, bob, b"ID3", duration=61, file_name="talk.mp3",
                                            title="Talk", caption="@alpaca_test_bot listen"), bot)
    assert audio.audio is not None and audio.audio.file_name == "talk.mp3"
    assert audio.audio.title == "Talk" and audio.caption == "@alpaca_test_bot listen"
    assert [e.type for e in audio.caption_entities] == ["mention"]
    note = Message.de_json(fake.send_video_note(group, bob, b"mp4", duration=9,
                                                reply_to=audio.message_id), bot)
    assert note.video_note is not None and note.video_note.length == 384
    assert note.reply_to_message is not None and note.reply_to_message.audio is not None
    assert await download(bot, note.video_note.file_id) == b"mp4"
    assert fake.downloads()[-1].endswith("/video_notes/file_2.mp4")


async def test_a_file_past_20_mb_is_refused_without_asking_when_its_size_says_so(
    fake: FakeBotAPI, bot: Bot
) -> None:
    alice = fake.user("Alice")
    big = MAX_DOWNLOAD_BYTES + 1
    sent = Message.de_json(fake.send_voice(fake.private_chat(alice), alice, b"x", duration=5,
                                           size=big), bot)
    assert sent.voice is not None
    with pytest.raises(FileTooBig) as caught:
        await download(bot, sent.voice.file_id, size=sent.voice.file_size)
    assert "20 MB" in str(caught.value) and "20.0 MB" in str(caught.value)
    assert fake.requests("getFile") == [] and fake.downloads() == []
    # Without its size the bot asks, and Telegram answers "file is too big".
    with pytest.raises(FileTooBig):
        await download(bot, sent.voice.file_id)
    [request] = fake.requests("getFile")
    assert request.status == 400 and request.description == FILE_TOO_BIG
    assert fake.downloads() == []


async def test_a_smaller_limit_and_unknown_files(fake: FakeBotAPI, bot: Bot) -> None:
    alice = fake.user("Alice")
    sent = Message.de_json(fake.send_voice(fake.private_chat(alice), alice, b"0123456789",
                                           duration=1), bot)
    assert sent.voice is not None
    with pytest.raises(FileTooBig):
        await download(bot, sent.voice.file_id, limit=5)
    with pytest.raises(DownloadFailed):
        await download(bot, "no-such-file")


def test_api_file_url_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.errors import ConfigError
    from bot.settings import load_settings

    assert load_settings(None).api_file_url is None
    monkeypatch.setenv("ALPACA_BOT_API_FILE_URL", "http://127.0.0.1:8081/file/bot")
    assert load_settings(None).api_file_url == "http://127.0.0.1:8081/file/bot"
    monkeypatch.setenv("ALPACA_BOT_API_FILE_URL", " ")
    assert load_settings(None).api_file_url is None
    monkeypatch.setenv("ALPACA_BOT_API_FILE_URL", "files.lan/file/bot")
    with pytest.raises(ConfigError, match="api_file_url must start with http"):
        load_settings(None)
