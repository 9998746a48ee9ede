"""Telegram callbacks: parse the update, check who may do it, call the chat service, reply.

Private chats: every text is a question. Groups: a question is a message that mentions the bot,
replies to one of its messages, or is `/ask TEXT`. Commands mirror llama.cpp's flags per chat;
in groups only the group's admins and the configured bot admins may change them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telegram import Chat, Message, MessageEntity, ReplyParameters, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import RetryAfter, TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from bot.admin import ModelAdmin
from bot.core.params import BY_COMMAND
from bot.errors import ModelError, QuantizeError, UserError
from bot.quantize_jobs import QuantizeJobs
from bot.service import Accepted, ChatService, RecoveryItem
from bot.settings import Settings
from bot.store.repository import ChatRef
from bot.telegram.streamer import FloodGate, ReplyStreamer, retry_seconds

log = logging.getLogger(__name__)
DEPS_KEY = "alpaca_bot"

HELP = """\
I answer with a local language model running on this server.
{how}

Commands (as llama.cpp's flags, per chat):
/ask TEXT — ask a question
/temp [VALUE] — temperature (--temp)
/ctx [VALUE] — context window in tokens (-c)
/n [VALUE] — reply length in tokens (-n)
/top_k [VALUE] — top-k sampling (--top_k)
/top_p [VALUE] — top-p sampling (--top_p)
/repeat_penalty [VALUE] — repetition penalty (--repeat_penalty)
/system [TEXT|default] — system prompt
/reset — start a fresh conversation
/settings — all values and how full the context is
/stop — stop the reply being written
/help — this text
Without a value a command shows the current value and its range.{admin_note}
Bot admins: /model [NAME] lists or switches models, /quantize [TYPE] [FILE] makes a 4-bit model."""

HOW_PRIVATE = "Just write to me."
HOW_GROUP = "In this group, mention me (@{username}), reply to one of my messages, or use /ask."
ADMIN_NOTE = "\nIn groups, only admins may change settings, /system and /reset."

BOT_COMMANDS = [
    ("ask", "ask a question"),
    ("settings", "show all settings and context use"),
    ("temp", "temperature (--temp)"),
    ("ctx", "context window in tokens (-c)"),
    ("n", "reply length in tokens (-n)"),
    ("top_k", "top-k sampling (--top_k)"),
    ("top_p", "top-p sampling (--top_p)"),
    ("repeat_penalty", "repetition penalty"),
    ("system", "system prompt"),
    ("reset", "start a fresh conversation"),
    ("stop", "stop the reply being written"),
    ("help", "how to use this bot"),
]


@dataclass
class BotDeps:
    """What the callbacks need, kept in `application.bot_data`."""

    settings: Settings
    service: ChatService
    admin: ModelAdmin | None = None
    jobs: QuantizeJobs | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    gates: dict[int, FloodGate] = field(default_factory=dict)
    last_admin_alert: float = float("-inf")

    def gate(self, chat: Chat | int, chat_type: str | None = None) -> FloodGate:
        """The one flood gate of a chat, shared by every reply and answer sent there."""
        chat_id = chat if isinstance(chat, int) else chat.id
        if chat_id not in self.gates:
            kind = chat_type or (chat.type if isinstance(chat, Chat) else ChatType.PRIVATE)
            group = kind in (ChatType.GROUP, ChatType.SUPERGROUP, ChatType.CHANNEL)
            interval = (
                self.settings.edit_interval_group if group else self.settings.edit_interval_private
            )
            self.gates[chat_id] = FloodGate(interval)
        return self.gates[chat_id]

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


def deps(context: ContextTypes.DEFAULT_TYPE) -> BotDeps:
    value = context.bot_data[DEPS_KEY]
    assert isinstance(value, BotDeps)
    return value


def chat_ref(chat: Chat) -> ChatRef:
    title = chat.title or chat.full_name or chat.username
    return ChatRef(chat.id, chat.type, title)


def thread_of(message: Message) -> int | None:
    return message.message_thread_id if message.is_topic_message else None


def is_group(chat: Chat) -> bool:
    return chat.type in (ChatType.GROUP, ChatType.SUPERGROUP)


async def respond(context: ContextTypes.DEFAULT_TYPE, message: Message, text: str) -> None:
    """Answer a command in the same chat and topic, as plain text, respecting flood bans."""
    gate = deps(context).gate(message.chat)
    for attempt in range(3):
        await gate.wait(spacing=False)
        started = time.monotonic()
        gate.called()
        try:
            # In groups, quote the command; if it was deleted meanwhile, answer anyway.
            quote = (
                ReplyParameters(message.message_id, allow_sending_without_reply=True)
                if is_group(message.chat) else None
            )
            await context.bot.send_message(
                message.chat_id, text, reply_parameters=quote,
                message_thread_id=thread_of(message),
            )
            return
        except RetryAfter as exc:
            gate.banned(started, retry_seconds(exc))
            if attempt == 2:
                raise


def command_argument(message: Message) -> str:
    """The raw text after `/command` (or `/command@bot`), newlines kept."""
    text = message.text or ""
    for entity in message.entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            return text[entity.length :].strip()
    return text.partition(" ")[2].strip()


async def may_change_settings(update: Update, context: ContextTypes.DEFAULT_TYPE) -> bool:
    chat, user, message = update.effective_chat, update.effective_user, update.effective_message
    if chat is None or chat.type == ChatType.PRIVATE:
        return True
    if message is not None and message.sender_chat is not None and message.sender_chat.id == chat.id:
        return True  # an anonymous admin of the group
    if user is None:
        return False
    if user.id in deps(context).settings.admins:
        return True
    try:
        member = await context.bot.get_chat_member(chat.id, user.id)
    except TelegramError as exc:
        log.warning("cannot check admin rights in chat %s: %s", chat.id, exc)
        return False
    return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)


# -- callbacks --------------------------------------------------------------------------------


async def on_help(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    how = HOW_GROUP.format(username=context.bot.username) if is_group(chat) else HOW_PRIVATE
    await respond(context, message, HELP.format(how=how, admin_note=ADMIN_NOTE if is_group(chat) else ""))


async def on_param(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    command = (message.text or "").split()[0].lstrip("/").split("@")[0].lower()
    service = deps(context).service
    argument = command_argument(message)
    try:
        if not argument:
            await respond(context, message, await service.show_param(chat_ref(chat), command))
            return
        if not await may_change_settings(update, context):
            await respond(context, message, "Only the group's admins can change settings.")
            return
        await respond(context, message, await service.set_param(chat_ref(chat), command, argument))
    except UserError as exc:
        await respond(context, message, str(exc))


async def on_system(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    service = deps(context).service
    argument = command_argument(message)
    try:
        if not argument:
            await respond(context, message, await service.show_system(chat_ref(chat)))
            return
        if not await may_change_settings(update, context):
            await respond(context, message, "Only the group's admins can change the system prompt.")
            return
        await respond(context, message, await service.set_system(chat_ref(chat), argument))
    except UserError as exc:
        await respond(context, message, str(exc))


async def on_reset(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    if not await may_change_settings(update, context):
        await respond(context, message, "Only the group's admins can reset the conversation.")
        return
    await respond(context, message, await deps(context).service.reset(chat_ref(chat)))


async def on_settings(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    await respond(context, message, await deps(context).service.settings_text(chat_ref(chat)))


async def on_stop(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    stopped = deps(context).service.stop(chat.id)
    if not stopped:
        await respond(context, message, "Nothing to stop: no reply is being written here.")


async def on_ask(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if message is None:
        return
    argument = command_argument(message)
    if not argument and message.reply_to_message is not None:
        argument = message.reply_to_message.text or ""
    if not argument:
        await respond(context, message, "Usage: /ask TEXT — ask me a question.")
        return
    await ask(update, context, argument)


async def on_private_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if message is not None and message.text:
        await ask(update, context, message.text)


async def on_group_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if message is None or not message.text:
        return
    username = context.bot.username
    replied = message.reply_to_message
    to_bot = replied is not None and replied.from_user is not None and (
        replied.from_user.id == context.bot.id
    )
    mentioned = mentions_bot(message, username, context.bot.id)
    if not (to_bot or mentioned):
        return
    text = re.sub(rf"@{re.escape(username)}\b", "", message.text, flags=re.I).strip()
    if not text:
        await respond(context, message, "Yes? Ask me something after the mention.")
        return
    await ask(update, context, text)


def mentions_bot(message: Message, username: str, bot_id: int) -> bool:
    entities = message.parse_entities([MessageEntity.MENTION, MessageEntity.TEXT_MENTION])
    for entity, text in entities.items():
        if entity.type == MessageEntity.MENTION and text.lstrip("@").lower() == username.lower():
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id:
            return True
    return False


def is_bot_admin(update: Update, context: ContextTypes.DEFAULT_TYPE) -> bool:
    user = update.effective_user
    return user is not None and user.id in deps(context).settings.admins


async def on_model(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if message is None:
        return
    d = deps(context)
    if not is_bot_admin(update, context) or d.admin is None:
        await respond(context, message, "Only the bot's admins can list and switch models.")
        return
    argument = command_argument(message)
    if not argument:
        await respond(context, message, await d.admin.listing())
        return
    await respond(
        context, message, f"Switching to {argument}: replies in progress finish first…"
    )

    async def switch() -> None:
        assert d.admin is not None
        try:
            text = await d.admin.switch(argument)
        except UserError as exc:
            text = str(exc)
        await respond(context, message, text)

    d.spawn(switch(), f"switch model to {argument}")


async def on_quantize(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message, chat, user = update.effective_message, update.effective_chat, update.effective_user
    if message is None or chat is None:
        return
    d = deps(context)
    if not is_bot_admin(update, context) or d.jobs is None:
        await respond(context, message, "Only the bot's admins can quantize models.")
        return
    try:
        request = await asyncio.to_thread(d.jobs.plan, command_argument(message))
        progress = make_streamer(
            d, context.application, chat.id, chat.type,
            reply_to=message.message_id, thread_id=thread_of(message),
        )
        job = await d.jobs.start(
            request, user_id=user.id if user else None, chat_id=chat.id,
            report=progress.update, finish=lambda text: _finish(progress, text),
        )
    except (UserError, QuantizeError, ModelError) as exc:  # bad type or file, or a job running
        await respond(context, message, str(exc))
        return
    await progress.update(
        f"Quantization #{job} queued: {request.source.name} → {request.qtype.label}…"
    )


async def _finish(streamer: ReplyStreamer, text: str) -> None:
    await streamer.finish(text)


async def report_interrupted_jobs(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Tell each chat whose quantization a restart cut off."""
    d: BotDeps = application.bot_data[DEPS_KEY]
    if d.jobs is None:
        return
    for job in await d.jobs.interrupted_jobs():
        log.warning("quantization job %d (%s) was interrupted by a restart", job.id, job.source)
        if job.chat_id is None:
            continue
        text = (
            f"⚠️ Quantization #{job.id} ({Path(job.source).name} → {job.qtype}) was interrupted "
            "by a restart of the bot. Nothing was written; run /quantize again."
        )
        try:
            await application.bot.send_message(job.chat_id, text)
        except TelegramError as exc:
            log.warning("could not report job %d: %s", job.id, exc)


async def on_unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None or is_group(chat):
        return  # in groups the command may be for another bot
    await respond(context, message, "Unknown command. /help lists what I understand.")


async def ask(update: Update, context: ContextTypes.DEFAULT_TYPE, text: str) -> None:
    """Store the question, then answer it in the background."""
    message, chat, user = update.effective_message, update.effective_chat, update.effective_user
    if message is None or chat is None:
        return
    d = deps(context)
    speaker = None
    if is_group(chat):
        speaker = (user.full_name if user else None) or (
            message.sender_chat.title if message.sender_chat else None
        ) or "someone"
    try:
        accepted = await d.service.accept(
            chat_ref(chat), text, speaker=speaker, user_id=user.id if user else None,
            message_id=message.message_id, thread_id=thread_of(message),
        )
    except UserError as exc:
        await respond(context, message, str(exc))
        return
    streamer = make_streamer(
        d, context.application, chat.id, chat.type,
        reply_to=message.message_id, thread_id=thread_of(message),
    )
    d.spawn(answer(d.service, accepted, streamer), f"answer chat {chat.id} turn {accepted.turn_id}")


def make_streamer(
    d: BotDeps,
    application: Application[Any, Any, Any, Any, Any, Any],
    chat_id: int,
    chat_type: str,
    *,
    reply_to: int | None,
    thread_id: int | None,
    existing_ids: list[int] | None = None,
) -> ReplyStreamer:
    group = chat_type in (ChatType.GROUP, ChatType.SUPERGROUP, ChatType.CHANNEL)
    gate = d.gate(chat_id, chat_type)
    return ReplyStreamer(
        application.bot,
        chat_id,
        interval=gate.interval,
        reply_to=reply_to if group else None,
        thread_id=thread_id,
        existing_ids=existing_ids or (),
        gate=gate,
    )


async def answer(service: ChatService, accepted: Accepted, streamer: ReplyStreamer) -> None:
    await streamer.typing()
    await service.answer(accepted, streamer)


async def resume_unfinished(application: Application[Any, Any, Any, Any, Any, Any]) -> int:
    """After a restart: redo questions a crash cut off and deliver replies stored but not shown."""
    d: BotDeps = application.bot_data[DEPS_KEY]
    items: list[RecoveryItem] = await d.service.unfinished()
    for item in items:
        question = item.question
        streamer = make_streamer(
            d, application, question.chat_id, item.chat_kind,
            reply_to=question.message_id, thread_id=question.thread_id,
            existing_ids=item.message_ids,
        )
        if item.needs_generation:
            log.info("answering turn %d of chat %d again after a restart", question.id,
                     question.chat_id)
            d.spawn(
                answer(d.service, Accepted(question.chat_id, question.id), streamer),
                f"resume chat {question.chat_id} turn {question.id}",
            )
        else:
            d.spawn(d.service.deliver_stored(item, streamer), f"deliver turn {question.id}")
    return len(items)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log every unexpected error once, and tell the configured admins (at most once a minute)."""
    log.error("error while handling an update", exc_info=context.error)
    d: BotDeps | None = context.bot_data.get(DEPS_KEY)
    message = update.effective_message if isinstance(update, Update) else None
    if message is not None and d is not None and not isinstance(context.error, TelegramError):
        # The person who sent it hears that it failed instead of silence.
        text = "⚠️ Something went wrong with that; the bot's admins have been told."
        if _disk_full(context.error):
            text = "⚠️ The server's disk is full, so I could not store that. Try again later."
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
    summary = f"⚠️ alpaca-bot error: {type(context.error).__name__}: {context.error}"[:1000]
    for admin in d.settings.admins:
        try:
            await context.bot.send_message(admin, summary)
        except TelegramError:
            log.warning("could not alert admin %s", admin)


def _disk_full(error: BaseException | None) -> bool:
    text = str(error).lower()
    return "disk is full" in text or "no space left" in text


def register(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Attach every handler to the application."""
    callbacks: dict[str, Callable[[Update, Any], Coroutine[Any, Any, None]]] = {
        "start": on_help,
        "help": on_help,
        "ask": on_ask,
        "system": on_system,
        "reset": on_reset,
        "settings": on_settings,
        "stop": on_stop,
        "model": on_model,
        "quantize": on_quantize,
    }
    for name, callback in callbacks.items():
        application.add_handler(CommandHandler(name, callback))
    application.add_handler(CommandHandler(list(BY_COMMAND), on_param))
    application.add_handler(
        MessageHandler(filters.TEXT & ~filters.COMMAND & filters.ChatType.PRIVATE, on_private_text)
    )
    application.add_handler(
        MessageHandler(filters.TEXT & ~filters.COMMAND & filters.ChatType.GROUPS, on_group_text)
    )
    application.add_handler(MessageHandler(filters.COMMAND, on_unknown_command))
    application.add_error_handler(on_error)
