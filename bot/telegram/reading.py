"""What Telegram messages bring besides their text, read into a question: the message a
question replies to (or the part quoted), the picture or document it replies to, and in
private chats a forward's origin; the picture or document a message carries. Files come
through `bot.telegram.files`; what each becomes is the chat layer's choice
(`bot.chat.reading`)."""

from __future__ import annotations

import logging

from telegram import (
    Bot,
    Message,
    MessageOrigin,
    MessageOriginChannel,
    MessageOriginChat,
    MessageOriginHiddenUser,
    MessageOriginUser,
)
from telegram.constants import ChatAction
from telegram.error import TelegramError

from bot.chat.documents import TakenDocument
from bot.chat.reading import Reading
from bot.core.chats import ChatRef, is_group_kind
from bot.reading.attachment import Attachment, AttachmentKind
from bot.reading.context import ContextItem
from bot.reading.extraction import is_image
from bot.telegram.files import download

log = logging.getLogger(__name__)


def attachment_of(bot: Bot, message: Message, *, author: str | None = None,
                  by_bot: bool = False) -> Attachment | None:
    """The picture or document a message carries (a photo's largest size), if any."""
    if message.photo:
        photo = message.photo[-1]

        async def fetch_photo() -> bytes:
            return await download(bot, photo.file_id, size=photo.file_size)

        return Attachment(kind="image", fetch=fetch_photo, mime="image/jpeg",
                          size=photo.file_size, message_id=message.message_id, author=author,
                          by_bot=by_bot)
    document = message.document
    if document is None:
        return None

    async def fetch_document() -> bytes:
        return await download(bot, document.file_id, size=document.file_size)

    kind: AttachmentKind = (
        "image" if is_image(document.file_name, document.mime_type) else "document")
    return Attachment(kind=kind, fetch=fetch_document, name=document.file_name,
                      mime=document.mime_type, size=document.file_size,
                      message_id=message.message_id, author=author, by_bot=by_bot)


def author_of(message: Message, bot_id: int) -> tuple[str, bool]:
    """Who wrote a message, and whether it was this bot."""
    user = message.from_user
    if user is not None and user.id == bot_id:
        return "", True
    if message.sender_chat is not None:
        return message.sender_chat.title or message.sender_chat.full_name or "someone", False
    return (user.full_name if user is not None else "") or "someone", False


def origin_name(origin: MessageOrigin) -> str:
    """Who a forwarded message came from, as its origin says."""
    if isinstance(origin, MessageOriginUser):
        return origin.sender_user.full_name
    if isinstance(origin, MessageOriginHiddenUser):
        return origin.sender_user_name
    if isinstance(origin, MessageOriginChat):
        return origin.sender_chat.title or origin.sender_chat.full_name or "a chat"
    if isinstance(origin, MessageOriginChannel):
        return origin.chat.title or "a channel"
    return "someone"


def replied_message(message: Message) -> Message | None:
    """The message this one replies to; in a forum topic not the topic's first message, which
    every message there "replies" to without its writer choosing it."""
    replied = message.reply_to_message
    if replied is None or replied.forum_topic_created is not None:
        return None
    return replied


async def message_context(
    bot: Bot, reading: Reading, ref: ChatRef, message: Message, *, max_chars: int,
) -> list[ContextItem]:
    """What a question's message brings along: the message it replies to (only the part
    quoted, with Telegram's `quote`; at most `max_chars`), read if it is a picture or a
    document, and in private chats a forward's origin. Raises the UserError of a picture or
    document that cannot be read."""
    items: list[ContextItem] = []
    replied = replied_message(message)
    if replied is not None:
        author, by_bot = author_of(replied, bot.id)
        attachment = attachment_of(bot, replied, author=author or None, by_bot=by_bot)
        if attachment is not None:
            item, _taken = await read_attachment(bot, reading, ref, message, attachment)
            items.append(item)
        quote = message.quote.text if message.quote is not None else None
        text = quote or replied.text or replied.caption or ""
        if text.strip():
            items.insert(0, ContextItem(kind="reply", text=text[:max_chars],
                                        author=author or None, by_bot=by_bot,
                                        quoted=quote is not None))
    origin = message.forward_origin
    if origin is not None and not is_group_kind(message.chat.type):
        items.append(ContextItem(kind="forward", author=origin_name(origin)))
    return items


async def read_attachment(
    bot: Bot, reading: Reading, ref: ChatRef, message: Message, attachment: Attachment
) -> tuple[ContextItem, TakenDocument | None]:
    """Read a picture or a document for a question in conversation `ref` (showing "typing"
    meanwhile); a UserError says what to tell its sender."""
    user = message.from_user
    try:
        await bot.send_chat_action(message.chat_id, ChatAction.TYPING,
                                   message_thread_id=ref.thread_id)
    except TelegramError as exc:
        log.debug("no typing action in chat %s: %s", message.chat_id, exc)
    return await reading.context_of(
        ref, attachment, user_id=user.id if user else None,
        speaker=user.full_name if user and is_group_kind(message.chat.type) else None)
