"""Honest about the demo model in Chinese: SmolLM2-135M cannot really answer in Chinese, so the
first reply to a Chinese-speaking asker in a chat, while the demo model runs, says so in one line.

A Chinese-speaking asker is one answered in Chinese (Telegram's language_code zh*, `/lang zh`,
the console's locale or --lang) or one whose question is written in Chinese. The note is said
once per chat (a forum topic is a chat of its own here) while the bot runs: every reply would
be a nag, and a restart saying it once more costs one line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from bot import i18n
from bot.chat.recent import RecentChats
from bot.i18n import N_, _
from bot.models.demo import find_demo_model

DEMO_CANNOT_ANSWER_CHINESE = N_(
    "ℹ️ This bot runs the small demo model (SmolLM2-135M), which cannot really answer in "
    "Chinese; its admin can switch to a multilingual model such as Qwen2.5 Instruct (see "
    "“Getting started” in the documentation)."
)
"""In English; shown translated."""

# Han ideographs (the unified block and extension A), and Japanese kana: a question with kana
# is Japanese, whose kanji are Han too.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
CHINESE_QUESTION_MIN_HAN = 2
"""Han characters that make a question Chinese (one could be a quoted name)."""


def written_in_chinese(text: str) -> bool:
    return len(_HAN.findall(text)) >= CHINESE_QUESTION_MIN_HAN and not _KANA.search(text)


class DemoModelNotice:
    """Whether a reply carries the note, and the chats that have had it."""

    def __init__(self, running_model: Callable[[], Path], *,
                 demo_model: Path | None = None) -> None:
        """`running_model` gives the file of the model running now (a /model switch changes
        it); `demo_model` is the demo model's file (default: where its package put it)."""
        self._running_model = running_model
        demo = demo_model if demo_model is not None else find_demo_model()
        self._demo = demo.resolve() if demo is not None else None
        self._told: RecentChats[int, bool] = RecentChats()

    def demo_is_running(self) -> bool:
        # The models directory holds a symlink to the demo model: compare the files themselves.
        return self._demo is not None and self._running_model().resolve() == self._demo

    def note(self, chat_id: int, question: str, note: str | None) -> str | None:
        """The reply's note (`note`: what else it says, or None) with the demo model's line
        before it, when this is the chat's first reply to Chinese on the demo model."""
        if chat_id in self._told:
            return note
        chinese = i18n.current() == "zh" or written_in_chinese(question)
        if not chinese or not self.demo_is_running():
            return note
        self._told[chat_id] = True
        line = _(DEMO_CANNOT_ANSWER_CHINESE)
        return f"{line}\n{note}" if note else line
