"""The bot's own membership of groups: added (Telegram's `my_chat_member`, whose `from` says by
whom), allowed at once, asked about or left as the access policy says; removed; and the
periodic sweep that leaves the groups nobody answered about within 24 hours and forgets old
requests and figures."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from telegram import ChatMemberUpdated, Update
from telegram.constants import ChatMemberStatus
from telegram.error import TelegramError

from bot.access.policy import GROUP_WAIT
from bot.chat.access import Someone
from bot.core.chats import is_group_kind
from bot.i18n import N_, _
from bot.telegram.access_notices import ask_admins, leave
from bot.telegram.front import AnyApplication, BotContext, deps_of

log = logging.getLogger(__name__)

GROUP_ASKED = N_("🔒 I answer only in groups my owner approved. They have been asked; until "
                 "then I stay quiet here.")
GROUP_LEAVING = N_("🔒 I answer only in groups my owner allowed, so I am leaving.")
SWEEP_EVERY = 600.0
"""Seconds between two sweeps."""
_OUT = (ChatMemberStatus.LEFT, ChatMemberStatus.BANNED)


def joined(change: ChatMemberUpdated) -> bool:
    return change.old_chat_member.status in _OUT and change.new_chat_member.status not in _OUT


async def on_my_chat_member(update: Update, context: BotContext) -> None:
    """The bot's status in a chat changed: in a group it joined, apply the policy; from a group
    it left, drop the request."""
    change = update.my_chat_member
    if change is None or not is_group_kind(change.chat.type):
        return  # a private chat: the person blocked or unblocked the bot
    chat, adder = change.chat, change.from_user
    access = deps_of(context.bot_data).service.access
    if change.new_chat_member.status in _OUT:
        await access.drop_request(chat.id)
        return
    if not joined(change):
        return
    group = Someone(chat.id, chat.title)
    by = Someone(adder.id, adder.full_name, adder.username, adder.language_code)
    action, made = await access.group_added(group, by)
    log.info("added to the group %s by %s: %s", group.label(), by.label(), action)
    if action == "ask":
        await _say(context, chat.id, _(GROUP_ASKED))
        if made is not None:
            await ask_admins(context.application, made)
    elif action == "leave":
        access.refused()
        await _say(context, chat.id, _(GROUP_LEAVING))
        await leave(context.bot, chat.id)


async def _say(context: BotContext, chat_id: int, text: str) -> None:
    try:
        await context.bot.send_message(chat_id, text)
    except TelegramError as exc:
        log.info("could not speak in the group %s: %s", chat_id, exc)


async def sweep(application: AnyApplication) -> None:
    """Leave the groups whose request waited GROUP_WAIT, forget requests and usage figures
    past their time."""
    service = deps_of(application.bot_data).service
    for request in await service.access.unanswered_groups(older_than=timedelta(seconds=GROUP_WAIT)):
        log.info("nobody answered about the group %s within 24 hours: leaving it", request.id)
        await leave(application.bot, request.id)
        await service.access.drop_request(request.id)
    pruned = await service.access.prune()
    if pruned:
        log.info("forgot %d access requests older than 30 days", pruned)
    await service.usage.prune()


async def sweep_forever(application: AnyApplication, every: float | None = None) -> None:
    """`sweep` now and every SWEEP_EVERY seconds until cancelled; a failure is logged and the
    next pass tries again."""
    while True:
        try:
            await sweep(application)
        except Exception:
            log.exception("the access sweep failed; trying again in %.0f s", SWEEP_EVERY)
        await asyncio.sleep(SWEEP_EVERY if every is None else every)
