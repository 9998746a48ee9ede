"""Telegram callbacks: parse the update, run the command table or ask the model, reply.

Private chats: every text is a question. Groups: a question is a message that mentions the bot,
replies to one of its messages, or is `/ask TEXT`. Every command comes from
`bot.chat.commands`; who may run it is the table's rule, checked by `TelegramFront.allowed`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from telegram import Message, MessageEntity, ReplyParameters, Update
from telegram.error import TelegramError
from telegram.ext import (
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import i18n
from bot.chat import Accepted, ChatService
from bot.chat.commands import Invocation, commands_for, dispatch
from bot.chat.hearing import HeadedSink, heading_of
from bot.chat.recovery import RecoveryItem
from bot.chat.servers import server_status_text
from bot.core.chats import ChatRef, is_group_kind
from bot.engine.base import ServerStatus
from bot.i18n import _
from bot.quantize.texts import interrupted_text
from bot.telegram import presses, switch_button, switch_press
from bot.telegram.front import (
    DEPS_KEY,
    AnyApplication,
    BotContext,
    TelegramFront,
    chat_ref,
    deps_of,
    respond,
    write_reply,
)
from bot.telegram.listening import sound_of

log = logging.getLogger(__name__)


async def set_language(update: Update, context: BotContext) -> None:
    """First for every update (group -1): the language the rest of its handling speaks, the
    chat's /lang, else the sender's Telegram language (a button press: the presser's). PTB
    handles each update in its own task, so this holds for its handlers and the tasks they
    start. Never stops the update: a failure to read the choice answers in the sender's
    language."""
    chat, user, message = update.effective_chat, update.effective_user, update.effective_message
    code = user.language_code if user is not None else None
    language = i18n.language_of(code)
    if chat is not None:
        ref = chat_ref(chat, message if isinstance(message, Message) else None)
        try:
            language = await deps_of(context.bot_data).service.languages.language_for(ref, code)
        except Exception:
            log.warning("could not read the language of chat %s", chat.id, exc_info=True)
    i18n.use(language)


async def chosen_language(service: ChatService, chat_id: int) -> str:
    """The language of a message the bot sends on its own (not answering an update): the
    chat's /lang, else English."""
    try:
        chosen = await service.languages.chosen(ChatRef(chat_id, "private"))
    except Exception:
        log.warning("could not read the language of chat %s", chat_id, exc_info=True)
        chosen = None
    return chosen or i18n.SOURCE


def command_argument(message: Message) -> str:
    """The raw text after `/command` (or `/command@bot`), newlines kept."""
    text = message.text or ""
    for entity in message.entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            return text[entity.length :].strip()
    return text.partition(" ")[2].strip()


def command_name(message: Message) -> str:
    return (message.text or "").split()[0].lstrip("/").split("@")[0].lower()


async def on_command(update: Update, context: BotContext) -> None:
    """Every command of the table."""
    message, chat, user = update.effective_message, update.effective_chat, update.effective_user
    if message is None or chat is None:
        return
    front = TelegramFront(update, context, message, chat)
    replied = message.reply_to_message
    call = Invocation(
        ref=chat_ref(chat, message), argument=command_argument(message),
        replied_text=(replied.text or "") if replied is not None else "",
        replied_sound=sound_of(replied) is not None,
        user_id=user.id if user else None,
        own_language=i18n.language_of(user.language_code) if user else None,
    )
    text = await dispatch(
        deps_of(context.bot_data).service, front, command_name(message), call,
        allowed=front.allowed,
    )
    if text:
        await front.answer(text)


async def on_private_text(update: Update, context: BotContext) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is not None and chat is not None and message.text:
        await TelegramFront(update, context, message, chat).ask(message.text)


async def on_group_text(update: Update, context: BotContext) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None or not message.text:
        return
    username = context.bot.username
    replied = message.reply_to_message
    to_bot = replied is not None and replied.from_user is not None and (
        replied.from_user.id == context.bot.id
    )
    if not (to_bot or mentions_bot(message, username, context.bot.id)):
        return
    front = TelegramFront(update, context, message, chat)
    text = re.sub(rf"@{re.escape(username)}\b", "", message.text, flags=re.I).strip()
    if not text:
        await front.answer(_("Yes? Ask me something after the mention."))
        return
    await front.ask(text)


def mentions_bot(message: Message, username: str, bot_id: int) -> bool:
    """Whether the message's text, or a photo's or document's caption, mentions the bot."""
    kinds: list[str | None] = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
    entities = {**message.parse_entities(kinds), **message.parse_caption_entities(kinds)}
    for entity, text in entities.items():
        if entity.type == MessageEntity.MENTION and text.lstrip("@").lower() == username.lower():
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id:
            return True
    return False


async def on_unknown_command(update: Update, context: BotContext) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None or is_group_kind(chat.type):
        return  # in groups the command may be for another bot
    await respond(context, message, _("Unknown command. /help lists what I understand."))


async def report_interrupted_jobs(application: AnyApplication) -> None:
    """Tell each chat whose quantization a restart cut off."""
    service = deps_of(application.bot_data).service
    jobs = service.jobs
    if jobs is None:
        return
    for job in await jobs.interrupted_jobs():
        log.warning("quantization job %d (%s) was interrupted by a restart", job.id, job.source)
        if job.chat_id is None:
            continue
        with i18n.speaking(await chosen_language(service, job.chat_id)):
            text = interrupted_text(job.id, Path(job.source), job.qtype)
        try:
            await application.bot.send_message(job.chat_id, text)
        except TelegramError as exc:
            log.warning("could not report job %d: %s", job.id, exc)


async def resume_unfinished(application: AnyApplication) -> int:
    """After a restart: redo questions a crash cut off and deliver replies stored but not shown."""
    d = deps_of(application.bot_data)
    items = await d.service.recovery.unfinished()
    for item in items:
        question = item.question
        if item.given_up:
            d.spawn(give_up(application, item), f"give up turn {question.id}")
            continue
        accepted: Accepted = item.accepted
        heading = heading_of(question)  # a heard question's reply begins with what was heard
        streamer = await d.reply_streamer(
            application.bot, item.telegram_chat_id, item.chat_kind, reply_to=question.message_id,
            thread_id=question.thread_id, existing_ids=item.message_ids, accepted=accepted,
        )
        # In the asker's language: the task copies the context it is made in.
        with i18n.speaking(item.language):
            if item.needs_generation:
                log.info("answering turn %d of chat %d again after a restart", question.id,
                         question.chat_id)
                d.spawn(write_reply(d.service, accepted, streamer, heading=heading),
                        f"resume chat {question.chat_id} turn {question.id}")
            else:
                sink = HeadedSink(streamer, heading) if heading else streamer
                d.spawn(d.service.recovery.deliver_stored(item, sink),
                        f"deliver turn {question.id}")
    return len(items)


async def give_up(application: AnyApplication, item: RecoveryItem) -> None:
    """A question whose answer failed at every start (see `bot.chat.recovery`): its asker and
    the admins hear that it was given up."""
    question = item.question
    log.error("gave up answering turn %d of chat %d: it was cut off by %d restarts in a row",
              question.id, question.chat_id, question.redone)
    with i18n.speaking(item.language):
        text = _("⚠️ I gave up on this question: answering it stopped the bot several times. "
                 "Try asking it another way, or shorter.")
    try:
        await application.bot.send_message(
            item.telegram_chat_id, text, message_thread_id=question.thread_id,
            reply_parameters=ReplyParameters(question.message_id, allow_sending_without_reply=True)
            if question.message_id else None,
        )
    except TelegramError as exc:
        log.warning("could not tell chat %d that its question was given up: %s",
                    item.telegram_chat_id, exc)
    await tell_admins(application, lambda: _(
        "⚠️ A question in chat {chat} was given up: answering it stopped the bot {count} times "
        "(see the log around turn {turn}).", chat=item.telegram_chat_id, count=question.redone,
        turn=question.id,
    ))


async def on_error(update: object, context: BotContext) -> None:
    """Log every unexpected error once, and tell the configured admins (at most once a minute)."""
    log.error("error while handling an update", exc_info=context.error)
    d = deps_of(context.bot_data) if DEPS_KEY in context.bot_data else None
    message = update.effective_message if isinstance(update, Update) else None
    if message is not None and d is not None and not isinstance(context.error, TelegramError):
        # The person who sent it hears that it failed instead of silence.
        text = _("⚠️ Something went wrong with that; the bot's admins have been told.")
        if _disk_full(context.error):
            text = _("⚠️ The server's disk is full, so I could not store that. Try again later.")
        try:
            await respond(context, message, text)
        except TelegramError:
            log.warning("could not tell chat %s about an error", message.chat_id)
    if d is None or not d.settings.admins:
        return
    now = time.monotonic()
    if now - d.last_admin_alert < 60:
        return
    d.last_admin_alert = now
    error = context.error
    await tell_admins(context.application, lambda: _(
        "⚠️ alpaca-bot error: {kind}: {error}", kind=type(error).__name__, error=error,
    )[:1000])


async def tell_admins(application: AnyApplication, text: Callable[[], str]) -> None:
    """Send `text()` to every configured admin, each in their private chat's /lang (else
    English); a failure to reach one is logged."""
    d = deps_of(application.bot_data)
    for admin in d.settings.admins:
        with i18n.speaking(await chosen_language(d.service, admin)):
            message = text()
        try:
            await application.bot.send_message(admin, message)
        except TelegramError as exc:
            log.warning("could not alert admin %s: %s", admin, exc)


async def on_server_status(application: AnyApplication, status: ServerStatus) -> None:
    """A model server went down or came back: the admins hear it."""
    await tell_admins(application, lambda: server_status_text(status))


def _disk_full(error: BaseException | None) -> bool:
    text = str(error).lower()
    return "disk is full" in text or "no space left" in text


def register(application: AnyApplication) -> None:
    """Attach every handler to the application: the command table's, then plain text."""
    # Before every other group (the access gate is -1): the language the update is answered in.
    application.add_handler(TypeHandler(Update, set_language), group=-2)
    names = [name for command in commands_for("telegram") for name in command.names]
    application.add_handler(CommandHandler(names, on_command))
    application.add_handler(
        MessageHandler(filters.TEXT & ~filters.COMMAND & filters.ChatType.PRIVATE, on_private_text)
    )
    application.add_handler(
        MessageHandler(filters.TEXT & ~filters.COMMAND & filters.ChatType.GROUPS, on_group_text)
    )
    application.add_handler(MessageHandler(filters.COMMAND, on_unknown_command))
    # "Switch to …" under an auto quantization's chart, before the replies' catch-all.
    application.add_handler(CallbackQueryHandler(switch_press.on_switch_press,
                                                 pattern=switch_button.PATTERN))
    application.add_handler(CallbackQueryHandler(presses.on_button))
    application.add_error_handler(on_error)
    deps_of(application.bot_data).tell_admins = partial(tell_admins, application)
