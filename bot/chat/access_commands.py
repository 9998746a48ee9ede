"""The operations of /allow, /deny, /access, /usage and /stats (registered in the command table,
which also says who may run them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bot.chat.access import parse_id
from bot.store.usage import NOBODY

if TYPE_CHECKING:
    from bot.chat.service import ChatService


class Call(Protocol):
    """What these operations read of a command's invocation."""

    @property
    def argument(self) -> str: ...

    @property
    def user_id(self) -> int | None: ...


async def allow(chat: ChatService, front: object, call: Call) -> str:
    return await chat.access.allow(parse_id(call.argument, "allow"), by=call.user_id)


async def deny(chat: ChatService, front: object, call: Call) -> str:
    return await chat.access.deny(parse_id(call.argument, "deny"), by=call.user_id)


async def access(chat: ChatService, front: object, call: Call) -> str:
    return await chat.access.listing()


async def usage(chat: ChatService, front: object, call: Call) -> str:
    # No user: the console, whose person runs the bot (no limits).
    admin = call.user_id is None or chat.access.is_admin(call.user_id)
    return await chat.usage.mine(call.user_id or NOBODY, admin=admin)


async def stats(chat: ChatService, front: object, call: Call) -> str:
    return await chat.usage.stats()
