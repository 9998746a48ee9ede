"""Access requests in Telegram: the notice each bot admin gets (with Approve and Deny buttons),
a press of those buttons, and what follows a decision (the person hears they are in; a denied
group is left). With no admin configured, a request is logged with the command that approves
it, for the owner at the terminal that runs the bot."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from telegram import Bot, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.error import TelegramError

from bot import i18n
from bot.chat.access import label
from bot.i18n import N_, _
from bot.store.schema import AccessRequestRow
from bot.telegram.front import AnyApplication, BotDeps, deps_of
from bot.telegram.handlers import chosen_language

log = logging.getLogger(__name__)

APPROVE = N_("✅ Approve")
DENY = N_("🚫 Deny")
NOT_ADMIN = N_("Only the bot's admins can answer access requests.")
APPROVED_USER = N_("✅ The bot's owner let you in: ask me anything.")
APPROVED_GROUP = N_("✅ The bot's owner approved this group: mention me or reply to me to ask.")
_DATA = re.compile(r"ac:([ad]):(-?[1-9][0-9]{0,18})")
"""`ac:<a(pprove)|d(eny)>:<user or chat id>`: at most 24 bytes of Telegram's 64."""


@dataclass(frozen=True)
class Answer:
    """A press of Approve or Deny under a notice: for which id."""

    approve: bool
    some_id: int


def parse_answer(data: object) -> Answer | None:
    """The press `data` encodes, or None when it is not one of these buttons."""
    if not isinstance(data, str) or (match := _DATA.fullmatch(data)) is None:
        return None
    return Answer(match.group(1) == "a", int(match.group(2)))


def buttons(some_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(_(APPROVE), callback_data=f"ac:a:{some_id}"),
        InlineKeyboardButton(_(DENY), callback_data=f"ac:d:{some_id}"),
    ]])


def notice_text(request: AccessRequestRow) -> str:
    """The notice of a request, in the current language."""
    who = label(request.id, request.name, request.username)
    if request.kind == "user":
        return _("🔔 {who} asks to use the bot (language: {language}). Their first message:\n"
                 "{preview}", who=who, language=request.language or "?",
                 preview=request.preview or "")
    if request.added_by_name:
        return _("🔔 {who} added the bot to the group {group}. Approve to let everyone there "
                 "use it; on Deny, or with no answer in 24 hours, the bot leaves.",
                 who=request.added_by_name, group=who)
    return _("🔔 The bot is asked to answer in the group {group}, which nobody approved. "
             "Approve to let everyone there use it; on Deny, or with no answer in 24 hours, "
             "the bot leaves.", group=who)


async def ask_admins(application: AnyApplication, request: AccessRequestRow) -> None:
    """Send every bot admin the notice of a new request (in their /lang); when there is no admin,
    or none could be reached, log it with the command that approves it."""
    deps = deps_of(application.bot_data)
    who = label(request.id, request.name, request.username)
    reached = 0
    for admin in deps.settings.admins:
        with i18n.speaking(await chosen_language(deps.service, admin)):
            text, markup = notice_text(request), buttons(request.id)
        try:
            await application.bot.send_message(admin, text, reply_markup=markup)
            reached += 1
        except TelegramError as exc:  # e.g. an admin who never wrote to the bot
            log.warning("could not send admin %s the request of %s: %s", admin, who, exc)
    if reached:
        log.info("access request from %s: the admins are asked", who)
        return
    log.warning("access request from %s: to let %s use the bot, run: alpaca-bot access allow %d",
                who, "them" if request.kind == "user" else "the group", request.id)


async def on_answer(deps: BotDeps, bot: Bot, query: CallbackQuery, answer: Answer) -> None:
    """A press of Approve or Deny: only a bot admin's counts. The notice then says what was
    decided, without its buttons; the other admins' copies answer a late press with the same."""
    access = deps.service.access
    if not access.is_admin(query.from_user.id):
        await _answer_query(query, _(NOT_ADMIN))
        return
    if answer.approve:
        outcome = await access.allow(answer.some_id, by=query.from_user.id)
    else:
        outcome = await access.deny(answer.some_id, by=query.from_user.id)
    await _answer_query(query, outcome)
    message = query.message
    if isinstance(message, Message) and message.text:
        try:
            await bot.edit_message_text(f"{message.text}\n\n{outcome}", chat_id=message.chat_id,
                                        message_id=message.message_id, reply_markup=None)
        except TelegramError as exc:
            log.info("could not mark the access notice answered: %s", exc)


async def on_decided(
    application: AnyApplication, some_id: int, allowed: bool, waiting: AccessRequestRow | None
) -> None:
    """After /allow, /deny or a button: whoever was waiting hears they are in; a group that
    lost access is left."""
    bot = application.bot
    if allowed and waiting is not None:
        if waiting.kind == "user":
            language = i18n.language_of(waiting.language)
        else:
            language = await chosen_language(deps_of(application.bot_data).service, some_id)
        with i18n.speaking(language):
            text = _(APPROVED_USER) if waiting.kind == "user" else _(APPROVED_GROUP)
        try:
            await bot.send_message(some_id, text)
        except TelegramError as exc:
            log.info("could not tell %s they may use the bot: %s", some_id, exc)
    elif not allowed and some_id < 0:
        await leave(bot, some_id)


async def leave(bot: Bot, chat_id: int) -> None:
    """Leave a group (one the bot is no longer in is fine)."""
    try:
        await bot.leave_chat(chat_id)
        log.info("left the group %s", chat_id)
    except TelegramError as exc:
        log.info("could not leave the group %s: %s", chat_id, exc)


async def _answer_query(query: CallbackQuery, text: str) -> None:
    try:
        await query.answer(text[:200])
    except TelegramError as exc:
        log.info("could not answer a press of an access button: %s", exc)
