"""A result with a "Switch to …" button (an auto quantization's chart), and what a press does:
exactly `/model NAME`, run as the person who pressed, with that command's access rule.

The button carries the model's file name (`model:NAME`, within Telegram's 64 bytes of callback
data); a longer name gets no button and the command to type instead. A press is answered at
once (the client shows a spinner until then); the switch itself answers in the chat as
`/model` does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.error import RetryAfter, TelegramError

from bot.chat.commands import Invocation, dispatch
from bot.i18n import N_, _
from bot.telegram.front import BotContext, TelegramFront, chat_ref, deps_of
from bot.telegram.ratelimit import retry_seconds
from bot.telegram.streamer import FloodGate

log = logging.getLogger(__name__)

PREFIX = "model:"
PATTERN = r"^model:"
MAX_DATA_BYTES = 64
MAX_CAPTION = 1024
MAX_ANSWER = 200
DEAD = N_("This button no longer works.")


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
    for attempt in range(3):
        await gate.wait(spacing=False)
        started = time.monotonic()
        gate.called()
        try:
            if image is not None and photo is not None:
                return await bot.send_photo(
                    chat_id, image, caption=text[:MAX_CAPTION], reply_markup=markup,
                    reply_parameters=quote, message_thread_id=thread_id, filename=photo.name,
                )
            return await bot.send_message(chat_id, text, reply_markup=markup,
                                          reply_parameters=quote, message_thread_id=thread_id)
        except RetryAfter as exc:
            gate.banned(started, retry_seconds(exc))
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def on_switch_press(update: Update, context: BotContext) -> None:
    """A press of "Switch to …": `/model NAME` as the presser."""
    query = update.callback_query
    if query is None:
        return
    message = query.message
    data = query.data or ""
    if not isinstance(message, Message) or not data.startswith(PREFIX):
        await _answer(query, _(DEAD))
        return
    name = data[len(PREFIX):]
    front = TelegramFront(update, context, message, message.chat)
    call = Invocation(ref=chat_ref(message.chat, message), argument=name,
                      user_id=query.from_user.id)
    text = await dispatch(deps_of(context.bot_data).service, front, "model", call,
                          allowed=front.allowed)
    # No text: the switch started and answers in the chat; a text is why it did not.
    await _answer(query, text or _("Switching to {name}…", name=name), alert=bool(text))


async def _answer(query: CallbackQuery, text: str, *, alert: bool = False) -> None:
    try:
        await query.answer(text[:MAX_ANSWER], show_alert=alert)
    except TelegramError as exc:  # too late: the client gave up waiting for it
        log.info("could not answer a button press: %s", exc)
