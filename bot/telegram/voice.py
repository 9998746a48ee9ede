"""Voice notes, audio files and round videos sent to the bot: heard (`bot.telegram.listening`),
then asked as a question whose reply begins with what was heard.

In private chats every one is heard: alone it is the question, with a caption it is what the
caption asks about. In groups only those for the bot: a reply to one of its messages, or a
caption that mentions it or starts with /ask. A message to the bot that replies to someone's
voice note (`@bot what does he say?`, `/ask` as a reply) is heard by the front's `ask`, and
`/transcribe` as a reply gives the transcript alone (the command table's).
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import MessageHandler, filters

from bot.telegram.attachments import asked_in_caption
from bot.telegram.front import AnyApplication, BotContext, TelegramFront
from bot.telegram.listening import sound_of


async def on_sound(update: Update, context: BotContext) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    sound = sound_of(message)
    if sound is None:
        return
    caption = asked_in_caption(message, chat, context.bot)
    if caption is None:
        return
    TelegramFront(update, context, message, chat).hear_and_ask(sound, about=caption)


def register(application: AnyApplication) -> None:
    """Voice notes, audio files and round videos, in every chat."""
    application.add_handler(
        MessageHandler(filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE, on_sound)
    )
