"""Listening to what someone sent in Telegram: the voice note, audio file or round video a
message holds, downloaded (`bot.telegram.files`) and heard (`bot.chat.hearing`) while the chat
shows the bot at it (typing, or its place in the queue) in a message that then shows what was
heard, or one line on why not. The front (`bot.telegram.front`) asks what was heard."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from telegram import Bot, Message

from bot.chat import ChatService
from bot.engine.base import CancelToken, Queued
from bot.errors import UserError
from bot.speech import SpeechError, Transcript, VoiceOff
from bot.telegram.files import DownloadFailed, FileTooBig, download
from bot.telegram.streamer import ReplyStreamer

log = logging.getLogger(__name__)

SOUNDS = ("voice", "audio", "video_note")
"""The fields of a Telegram message that hold something to hear, by Telegram's names."""
AdminAlert = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Sound:
    """Something to hear: a voice note, an audio file or a round video."""

    kind: str
    """Its field in Telegram's Message: voice, audio or video_note."""
    file_id: str
    size: int | None
    seconds: float | None
    """Its length as Telegram says (None: not said)."""


@dataclass(frozen=True)
class HeardNote:
    """A question heard rather than typed, as the front asks it: what from, how long, the
    heading its reply begins with, and the message that shows it (edited into the reply)."""

    kind: str
    seconds: float
    heading: str
    status: ReplyStreamer


def sound_of(message: Message | None) -> Sound | None:
    """The voice note, audio file or round video `message` holds, if any."""
    if message is None:
        return None
    for kind in SOUNDS:
        media = getattr(message, kind)
        if media is not None:
            # to_dict: the raw number of seconds (PTB's `duration` property warns about its type).
            seconds = media.to_dict().get("duration")
            return Sound(kind, media.file_id, media.file_size,
                         float(seconds) if seconds is not None else None)
    return None


async def listen(
    service: ChatService, bot: Bot, sound: Sound, status: ReplyStreamer, *, chat_key: str,
    share: str | None, hint: str | None, alert: AdminAlert | None = None,
) -> Transcript | None:
    """What `sound` says, heard in the fair queue as conversation `chat_key` (`share`: whose
    turn it takes); `hint`: the sender's Telegram language. None when it was not heard:
    `status` then says why, and `alert` tells the admins of a broken speech model."""
    hearing = service.hearing
    early = hearing.too_long(sound.seconds)
    if early is not None:
        await status.fail(early)
        return None
    await status.typing()

    async def show_place(place: Queued) -> None:
        await status.waiting(place.ahead, stalled=place.stalled)

    try:
        if not hearing.enabled:
            raise VoiceOff("asr_model is empty")
        data = await download(bot, sound.file_id, size=sound.size)
        return await hearing.transcribe(data, chat_key=chat_key, share=share, hint=hint,
                                        cancel=CancelToken(), on_place=show_place)
    except (FileTooBig, DownloadFailed) as exc:
        service.metrics.transcription("too_big" if isinstance(exc, FileTooBig) else "failed")
        await status.fail(str(exc))
    except (SpeechError, UserError) as exc:
        await status.fail(hearing.refusal(exc))
        if alert is not None and hearing.alert_due(exc):
            await alert(str(exc))
    except Exception as exc:
        log.exception("hearing a %s failed", sound.kind)
        await status.fail(hearing.refusal(exc))
    return None
