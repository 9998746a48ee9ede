"""The gate every update passes before any handler: who may use the bot and how much, decided
here once (the access policy and the fair-use limits of `bot.chat.access` and `bot.chat.usage`).

A refused update stops here (PTB's `ApplicationHandlerStop`): it reaches neither the model nor
the database, beyond what a request keeps. Bot admins always pass. The gate also takes the
bot's membership changes (`my_chat_member`) and the presses of the Approve/Deny buttons.
"""

from __future__ import annotations

import logging
from functools import partial

from telegram import CallbackQuery, Chat, Message, MessageEntity, Update, User
from telegram.ext import ApplicationHandlerStop, TypeHandler

from bot.chat.access import Someone
from bot.core.chats import is_group_kind
from bot.i18n import N_, _
from bot.telegram import access_notices, membership
from bot.telegram.front import AnyApplication, BotContext, BotDeps, deps_of, respond
from bot.telegram.handlers import command_name, mentions_bot

log = logging.getLogger(__name__)

GATE_GROUP = -1
"""The handler group of the gate: after the language is set (-2), before every handler (0)."""
PRIVATE_ASKED = N_("🔒 This bot is private. Its owner has been asked to let you in; you will "
                   "hear from me when they do.")
PRIVATE_ONLY = N_("🔒 This bot is private: only the people its owner allowed can use it.")
PRESS_REFUSED = N_("🔒 This bot is private.")


async def on_update(update: Update, context: BotContext) -> None:
    """Let the update through, or handle it here and stop it."""
    deps = deps_of(context.bot_data)
    if update.my_chat_member is not None:
        await membership.on_my_chat_member(update, context)
        raise ApplicationHandlerStop
    if update.callback_query is not None:
        await _press(deps, context, update.callback_query)
        return
    message, chat, user = update.message, update.effective_chat, update.effective_user
    if message is None or chat is None or deps.service.access.is_admin(user.id if user else None):
        return
    if not await _may_use(deps, context, message, chat, user):
        raise ApplicationHandlerStop
    if user is not None and is_question(message, context.bot.username, context.bot.id):
        refused = await deps.service.usage.judge(user_id=user.id, chat_id=chat.id)
        if refused is not None:
            log.info("refused a question of %s in chat %s (%s)", user.id, chat.id,
                     refused.refusal.reason)
            if refused.text is not None:
                await respond(context, message, refused.text)
            raise ApplicationHandlerStop


async def _may_use(
    deps: BotDeps, context: BotContext, message: Message, chat: Chat, user: User | None
) -> bool:
    """Whether the sender (private) or the group may use the bot; a stranger is answered as
    the policy says."""
    access = deps.service.access
    if not is_group_kind(chat.type):
        if user is None or await access.allowed(user.id):
            return True
        person = Someone(user.id, user.full_name, user.username, user.language_code)
        outcome = await access.stranger(person, message.text or message.caption or "")
        if outcome.answer:
            await respond(context, message, _(PRIVATE_ASKED if outcome.asked else PRIVATE_ONLY))
        if outcome.request is not None:
            await access_notices.ask_admins(context.application, outcome.request)
        return False
    if await access.allowed(chat.id):
        return True
    if await access.denied(chat.id):
        await access_notices.leave(context.bot, chat.id)  # denied from the terminal meanwhile
        return False
    if addressed(message, context.bot.username, context.bot.id):
        access.refused()
        made = await access.stranger_group(Someone(chat.id, chat.title))
        if made is not None:
            await respond(context, message, _(membership.GROUP_ASKED))
            await access_notices.ask_admins(context.application, made)
    return False


async def _press(deps: BotDeps, context: BotContext, query: CallbackQuery) -> None:
    """Approve/Deny is handled here; another button passes where its presser may use the bot."""
    answer = access_notices.parse_answer(query.data)
    if answer is not None:
        await access_notices.on_answer(deps, context.bot, query, answer)
        raise ApplicationHandlerStop
    access, message = deps.service.access, query.message
    if access.is_admin(query.from_user.id) or not isinstance(message, Message):
        return
    chat = message.chat
    where = chat.id if is_group_kind(chat.type) else query.from_user.id
    if not await access.allowed(where):
        access.refused()
        await query.answer(_(PRESS_REFUSED))
        raise ApplicationHandlerStop


def _own_command(message: Message, username: str) -> str | None:
    """The name of the command the message (or a photo's or document's caption) starts with,
    when it is for this bot."""
    text = message.text or message.caption or ""
    entities = message.entities if message.text else message.caption_entities
    if not any(e.type == MessageEntity.BOT_COMMAND and e.offset == 0 for e in entities):
        return None
    name, at, target = text.split()[0].partition("@")
    if at and target.lower() != username.lower():
        return None  # /command@another_bot
    return command_name(message) if message.text else name.lstrip("/").lower()


def addressed(message: Message, username: str, bot_id: int) -> bool:
    """Whether a group message is for this bot: its command, a mention, a reply to it."""
    return _own_command(message, username) is not None or is_question(message, username, bot_id)


def is_question(message: Message, username: str, bot_id: int) -> bool:
    """Whether the message asks the model something: in private any message but a command (a
    text, and whatever else the handlers answer), /ask, and in a group a message that replies
    to the bot or a text or caption that mentions it (as the handlers read them)."""
    command = _own_command(message, username)
    if command is not None:
        return command == "ask"
    if (message.text or "").startswith("/"):
        return False  # a command for another bot
    if not is_group_kind(message.chat.type):
        return True
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot_id:
        return True
    return mentions_bot(message, username, bot_id)


def register(application: AnyApplication) -> None:
    """Put the gate before every handler; a denied group is left, and a person let in is told."""
    application.add_handler(TypeHandler(Update, on_update), group=GATE_GROUP)
    deps = deps_of(application.bot_data)
    deps.service.access.add_listener(partial(access_notices.on_decided, application))
