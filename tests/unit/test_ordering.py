"""The update processor: one chat's updates in order, and never more than one of the bot's
places held by a chat, however many updates it sends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telegram import Bot, Update

import bot.telegram.ordering as ordering
from bot.telegram.ordering import ChatOrderedUpdateProcessor

BOT = Bot("1:fake")


def message_update(update_id: int, chat_id: int) -> Update:
    chat = {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private", "title": "g"}
    user = {"id": 7, "is_bot": False, "first_name": "A"}
    message = {"message_id": update_id, "date": 0, "chat": chat, "from": user, "text": "/help"}
    update = Update.de_json({"update_id": update_id, "message": message}, BOT)
    assert update is not None
    return update


async def test_a_burst_from_one_chat_holds_one_place() -> None:
    processor = ChatOrderedUpdateProcessor(max_concurrent_updates=2)
    release = asyncio.Event()
    handled: list[int] = []

    async def slow(n: int) -> None:
        await release.wait()  # the group's handlers wait (say, for Telegram)
        handled.append(n)

    async def quick() -> None:
        handled.append(-1)

    burst = [asyncio.create_task(processor.process_update(message_update(n, -100), slow(n)))
             for n in range(10)]
    await asyncio.sleep(0.05)
    other = asyncio.create_task(processor.process_update(message_update(99, 5), quick()))
    await asyncio.wait_for(other, timeout=1)  # another chat runs at once
    assert handled == [-1]
    release.set()
    await asyncio.gather(*burst)
    assert handled == [-1, *range(10)]  # the group's own order kept


async def test_a_chat_s_backlog_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ordering, "MAX_WAITING_PER_CHAT", 3)
    processor = ChatOrderedUpdateProcessor()
    release = asyncio.Event()
    handled: list[int] = []

    async def handle(n: int) -> Any:
        await release.wait()
        handled.append(n)

    tasks = [asyncio.create_task(processor.process_update(message_update(n, -100), handle(n)))
             for n in range(5)]
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(*tasks)
    assert handled == [0, 1, 2]  # the fourth and fifth arrived with three waiting
