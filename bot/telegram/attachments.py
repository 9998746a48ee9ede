"""Photos and documents sent to the bot: read (a picture's text, a document's passages) and
then asked about, or a document acknowledged (`bot.telegram.reading` reads them)."""

from __future__ import annotations

import re

from telegram import Bot, Chat, Message, MessageEntity, Update
from telegram.ext import MessageHandler, filters

from bot.core.chats import is_group_kind
from bot.errors import UserError
from bot.telegram.front import AnyApplication, BotContext, TelegramFront, chat_ref, deps_of
from bot.telegram.handlers import mentions_bot
from bot.telegram.reading import attachment_of, read_attachment, replied_message


async def on_attachment(update: Update, context: BotContext) -> None:
    """A photo or a document. In private chats always read: with a caption it is a question,
    a document alone is acknowledged (ask about it later), a picture alone is a question about
    its text. In groups only when it is for the bot: a caption that mentions it or starts with
    /ask, or a reply to one of its messages."""
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    attachment = attachment_of(context.bot, message)
    if attachment is None:
        return
    caption = asked_in_caption(message, chat, context.bot)
    if caption is None:
        return
    front = TelegramFront(update, context, message, chat)
    try:
        item, taken = await read_attachment(context.bot, deps_of(context.bot_data).service.reading,
                                            chat_ref(chat, message), message, attachment)
    except UserError as exc:
        await front.answer(str(exc))
        return
    if taken is not None and not caption.strip() and attachment.kind == "document":
        await front.answer(taken.acknowledgement(asked=False))
        return
    if taken is not None and taken.truncated:
        await front.answer(taken.acknowledgement(asked=True))
    await front.ask(caption, context=[item])


def asked_in_caption(message: Message, chat: Chat, bot: Bot) -> str | None:
    """The question a caption asks: in private the caption (a leading /ask taken out, empty
    when there is none); in a group what `caption_question` finds, None where the message is
    not for the bot."""
    if is_group_kind(chat.type):
        return caption_question(message, bot.username, bot.id)
    return re.sub(r"^/ask(@\w+)?\b", "", message.caption or "").strip()


def caption_question(message: Message, username: str, bot_id: int) -> str | None:
    """In a group, the question a caption asks the bot (the mention or /ask taken out), or
    None where the message is not for the bot."""
    caption = message.caption or ""
    replied = replied_message(message)
    to_bot = replied is not None and replied.from_user is not None and (
        replied.from_user.id == bot_id)
    command = next((e for e in message.caption_entities
                    if e.type == MessageEntity.BOT_COMMAND and e.offset == 0), None)
    if command is not None:
        name, _at, target = caption[: command.length].lstrip("/").partition("@")
        if name.lower() != "ask" or (target and target.lower() != username.lower()):
            return None
        return caption[command.length:].strip()
    if not (to_bot or mentions_bot(message, username, bot_id)):
        return None
    return re.sub(rf"@{re.escape(username)}\b", "", caption, flags=re.I).strip()


def register(application: AnyApplication) -> None:
    """Photos and documents (a picture sent as a file too), in every chat."""
    application.add_handler(MessageHandler(filters.PHOTO | filters.Document.ALL, on_attachment))
