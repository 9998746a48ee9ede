"""Reply buttons: their callback data (small, parsed strictly) and markup; callback updates keep
their chat's order."""

from __future__ import annotations

import asyncio

import pytest
from telegram import Bot, Update

from bot.chat.sink import actions_after
from bot.telegram.buttons import (
    LABELS,
    Pressed,
    ReplyButtons,
    callback_data,
    parse_callback,
)
from bot.telegram.ordering import ChatOrderedUpdateProcessor


def test_callback_data_round_trips_and_fits_telegram_s_64_bytes() -> None:
    for button in LABELS:
        data = callback_data(button, 2**53)
        assert len(data.encode()) <= 64
        assert parse_callback(data) == Pressed(button, 2**53)


@pytest.mark.parametrize(
    "data",
    [None, "", "r", "r:", "r:0", "r:-1", "r:01", "x:1", "R:1", "r:1 ", " r:1", "r:1:2",
     "r:1\n", "r:١", "r:" + "9" * 19, "r:" + "1" * 70, b"r:1", 12, "s:1;DROP TABLE"],
)
def test_anything_else_is_not_a_button_of_ours(data: object) -> None:
    assert parse_callback(data) is None


def test_the_buttons_while_writing_and_after() -> None:
    buttons = ReplyButtons(42)
    assert buttons.while_writing() == ("stop",)
    assert buttons.after(("continue", "regenerate")) == ("regenerate", "continue")
    assert buttons.after(()) == ()
    markup = buttons.markup(buttons.after(actions_after("Half a", "length")))
    assert markup is not None
    assert [(b.text, b.callback_data) for b in markup.inline_keyboard[0]] == [
        ("🔄 Regenerate", "r:42"), ("➡ Continue", "c:42"),
    ]
    assert buttons.markup(()) is None


def test_continue_is_offered_only_for_a_reply_cut_off_at_n() -> None:
    assert actions_after("text", "length") == ("regenerate", "continue")
    assert actions_after("   ", "length") == ("regenerate",)
    for reason in ("eos", "stop", "cancelled", "context"):
        assert actions_after("text", reason) == ("regenerate",)


async def test_callback_updates_wait_for_their_chat_s_earlier_updates() -> None:
    bot = Bot("1:fake")
    chat = {"id": 5, "type": "private", "first_name": "A"}
    user = {"id": 5, "is_bot": False, "first_name": "A"}
    message = {"message_id": 1, "date": 0, "chat": chat, "from": user, "text": "hi"}
    text_update = Update.de_json({"update_id": 1, "message": message}, bot)
    press = Update.de_json({"update_id": 2, "callback_query": {
        "id": "9", "from": user, "chat_instance": "1", "data": "r:1", "message": message,
    }}, bot)
    assert press is not None and press.effective_chat is not None
    assert press.effective_chat.id == 5
    processor = ChatOrderedUpdateProcessor()
    order: list[str] = []
    release = asyncio.Event()

    async def first() -> None:
        await release.wait()
        order.append("message")

    async def second() -> None:
        order.append("press")

    tasks = [asyncio.create_task(processor.do_process_update(text_update, first())),
             asyncio.create_task(processor.do_process_update(press, second()))]
    await asyncio.sleep(0.05)
    assert order == []
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["message", "press"]
