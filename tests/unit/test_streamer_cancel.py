"""A reply streamer's background task ends when it is cancelled, whatever happens beside the
cancellation: a task that lost one waited on for ever, 4 s at a time, and held up the event
loop's end (a bot's shutdown hung in asyncio.Runner's final cancellation of its tasks)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from telegram import Bot

from bot.telegram.streamer import ReplyStreamer, set_within


class ChatActions:
    """The one Bot API call a streamer makes before its reply has text."""

    def __init__(self) -> None:
        self.typing = asyncio.Event()

    async def send_chat_action(self, *args: Any, **kwargs: Any) -> bool:
        self.typing.set()
        return True


async def test_a_streamer_cancelled_as_its_text_changes_ends() -> None:
    bot = ChatActions()
    streamer = ReplyStreamer(cast(Bot, bot), 42, interval=1.0)
    await streamer.typing()
    task = streamer._task
    assert task is not None
    await asyncio.wait_for(bot.typing.wait(), 2)  # it shows "typing…", then waits for text
    await asyncio.sleep(0.05)
    await streamer.update("")  # wakes the task (no text: nothing to show)...
    task.cancel()  # ...in the same turn of the loop as it is cancelled
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done and task.cancelled()


async def test_set_within_says_whether_the_event_came_in_time_and_lets_cancellation_through(
) -> None:
    event = asyncio.Event()
    assert not await set_within(event, 0.01)
    event.set()
    assert await set_within(event, 0.01)

    event.clear()
    waiting = asyncio.create_task(set_within(event, 5))
    await asyncio.sleep(0)
    event.set()
    waiting.cancel()
    done, _ = await asyncio.wait([waiting], timeout=1)
    assert waiting in done and waiting.cancelled()
