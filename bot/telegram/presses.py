"""A press of a reply's button (a callback query): check it, do it, answer it.

Every query is answered (`answerCallbackQuery`), or the client shows its spinner for a while:
with what happens ("Stopping…"), or why nothing does. Only the person who asked, the group's
admins and the bot's admins may press; buttons of a reply that is no longer the chat's last
say so, and lose their markup.
"""

from __future__ import annotations

import logging

from telegram import CallbackQuery, Message, Update
from telegram.error import RetryAfter, TelegramError

from bot.chat.redo import Refused
from bot.i18n import N_, _
from bot.telegram.buttons import parse_callback
from bot.telegram.front import BotContext, TelegramFront, chat_ref, deps_of

log = logging.getLogger(__name__)

ANSWERS = {
    "stop": N_("⏹ Stopping…"),
    "regenerate": N_("🔄 Writing it again…"),
    "continue": N_("➡ Continuing…"),
}
NOT_YOURS = N_("Only the person who asked, or an admin, can use this button.")
NOT_WRITING = N_("This reply is not being written any more.")
DEAD = N_("This button no longer works.")
FAILED = N_("⚠️ That did not work; the bot's admins have been told.")
MAX_ANSWER = 200
"""Telegram's limit for the text of a callback answer."""


async def on_button(update: Update, context: BotContext) -> None:
    """Every press of an inline button."""
    query = update.callback_query
    if query is None:
        return
    try:
        text = await _press(update, context, query)
    except Exception:
        await answer_press(query, _(FAILED))
        raise
    await answer_press(query, text)


async def _press(update: Update, context: BotContext, query: CallbackQuery) -> str | None:
    pressed = parse_callback(query.data)
    message = query.message
    if pressed is None or not isinstance(message, Message):
        return _(DEAD)  # not our data, or a message too old for the client to show
    chat = message.chat
    service = deps_of(context.bot_data).service
    conversation_id = await service.conversation.conversation_id(chat_ref(chat, message))
    try:
        question = await service.redo.question(
            conversation_id, pressed.question_id, message.message_id
        )
    except Refused as exc:
        return await _refused(context, query, message, exc)
    front = TelegramFront(update, context, message, chat)
    if query.from_user.id != question.asker and not await front.allowed("chat_admins"):
        return _(NOT_YOURS)
    if pressed.button == "stop":
        stopped = service.activity.stop_turn(conversation_id, question.turn_id)
        answer = ANSWERS["stop"] if stopped else NOT_WRITING
        return _(answer)  # not _(ANSWERS["stop"]): extraction would take "stop" as a message
    try:
        plan = await service.redo.for_button(
            conversation_id, question.turn_id, pressed.button, message_id=message.message_id
        )
    except Refused as exc:
        return await _refused(context, query, message, exc)
    await front.redo(plan)
    return _(ANSWERS[pressed.button])


async def _refused(
    context: BotContext, query: CallbackQuery, message: Message, refused: Refused
) -> str:
    shown = message.reply_markup.inline_keyboard if message.reply_markup is not None else ()
    if refused.stale and any(b.callback_data == query.data for row in shown for b in row):
        await _drop_buttons(context, message)  # a button it shows (not forged data)
    return str(refused)


async def _drop_buttons(context: BotContext, message: Message) -> None:
    """Remove the buttons of a message they no longer work on (one edit, flood bans kept)."""
    gate = deps_of(context.bot_data).gate(message.chat_id, message.chat.type)
    try:
        await gate.call(
            lambda: context.bot.edit_message_reply_markup(message.chat_id, message.message_id),
            spacing=False,
        )
    except RetryAfter:
        pass  # the gate keeps the ban; the stale buttons stay, saying so when pressed
    except TelegramError as exc:
        log.info("chat %s: could not remove stale buttons: %s", message.chat_id, exc)


async def answer_press(query: CallbackQuery, text: str | None, *, alert: bool = False) -> None:
    """Answer a button press (the client's spinner stops): with `text` (an `alert` the presser
    must close), or silently."""
    try:
        await query.answer(text[:MAX_ANSWER] if text else None, show_alert=alert)
    except TelegramError as exc:  # too late: the client gave up waiting for it
        log.info("could not answer a button press: %s", exc)
