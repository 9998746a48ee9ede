"""A result with a "Switch to …" button (an auto quantization's chart): the button, its
callback data, and sending the result with it (`switch_press` handles a press).

The button carries the model's file name (`model:NAME`, within Telegram's 64 bytes of callback
data); a longer name gets no button and the command to type instead.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import MessageLimit

from bot.i18n import _
from bot.telegram.flood import FloodGate, send_with_retries

log = logging.getLogger(__name__)

PREFIX = "model:"
PATTERN = r"^model:"
MAX_DATA_BYTES = 64


def switch_markup(name: str) -> InlineKeyboardMarkup | None:
    """The button, or None when the name does not fit in callback data."""
    data = PREFIX + name
    if len(data.encode("utf-8")) > MAX_DATA_BYTES:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(_("Switch to {name}", name=name),
                                                       callback_data=data)]])


async def send_result(
    bot: Bot, gate: FloodGate, chat_id: int, text: str, *, photo: Path | None,
    switch_to: str | None, reply_to: int | None, thread_id: int | None,
) -> Message:
    """`text` as a photo's caption (or a message without a photo), with the switch button."""
    markup = switch_markup(switch_to) if switch_to else None
    if switch_to and markup is None:
        text += "\n" + _("Switch to it with /model {name}", name=switch_to)
    image: bytes | None = None
    if photo is not None:
        try:
            image = await asyncio.to_thread(photo.read_bytes)
        except OSError as exc:
            log.warning("cannot read the chart %s: %s", photo, exc)
    quote = (ReplyParameters(reply_to, allow_sending_without_reply=True)
             if reply_to is not None else None)

    async def send() -> Message:
        if image is not None and photo is not None:
            return await bot.send_photo(
                chat_id, image, caption=text[:MessageLimit.CAPTION_LENGTH], reply_markup=markup,
                reply_parameters=quote, message_thread_id=thread_id, filename=photo.name,
            )
        return await bot.send_message(chat_id, text, reply_markup=markup,
                                      reply_parameters=quote, message_thread_id=thread_id)

    return await send_with_retries(gate, send)
