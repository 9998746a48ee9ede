"""The inline buttons under a reply: ⏹ Stop while it is written, 🔄 Regenerate and ➡ Continue
after, and their callback data (`presses` handles a press).

Callback data comes back from the client as sent, but a modified client can send any bytes for
any message: it is parsed strictly, and the question it names must be in the chat it came from,
with its reply in the message pressed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.chat.sink import ReplyAction
from bot.i18n import N_, _

Button = Literal["stop", "regenerate", "continue"]
LABELS: dict[Button, str] = {
    "stop": N_("⏹ Stop"),
    "regenerate": N_("🔄 Regenerate"),
    "continue": N_("➡ Continue"),
}
_CODES: dict[Button, str] = {"stop": "s", "regenerate": "r", "continue": "c"}
_BY_CODE: dict[str, Button] = {code: button for button, code in _CODES.items()}
_DATA = re.compile(r"([src]):([1-9][0-9]{0,17})")
"""`<button>:<question turn id>`: at most 20 bytes of Telegram's 64."""


@dataclass(frozen=True)
class Pressed:
    """A button press as its callback data says: which button, under the reply to which
    question (not yet checked against the store)."""

    button: Button
    question_id: int


def callback_data(button: Button, question_id: int) -> str:
    return f"{_CODES[button]}:{question_id}"


def parse_callback(data: object) -> Pressed | None:
    """The press `data` encodes, or None for anything this bot did not send."""
    if not isinstance(data, str) or len(data) > 64:
        return None
    match = _DATA.fullmatch(data)
    if match is None:
        return None
    return Pressed(_BY_CODE[match.group(1)], int(match.group(2)))


MarkupKey = tuple[Button, ...]
"""The buttons a message shows, in order (empty: none)."""


class ReplyButtons:
    """The buttons of one reply (to the question `question_id`)."""

    def __init__(self, question_id: int) -> None:
        self.question_id = question_id

    @staticmethod
    def while_writing() -> MarkupKey:
        return ("stop",)

    @staticmethod
    def after(actions: Sequence[ReplyAction]) -> MarkupKey:
        return tuple(action for action in ("regenerate", "continue") if action in actions)

    def markup(self, key: MarkupKey) -> InlineKeyboardMarkup | None:
        if not key:
            return None
        return InlineKeyboardMarkup([[
            InlineKeyboardButton(_(LABELS[button]),
                                 callback_data=callback_data(button, self.question_id))
            for button in key
        ]])
