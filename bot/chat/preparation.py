"""Preparing a reply: its prompt window (the chat's system prompt and summary, then the newest
turns that fit the budget) and the request the engine is given."""

from __future__ import annotations

from dataclasses import dataclass

from bot.chat.chat_settings import ChatSettings
from bot.chat.running import RunningModel
from bot.chat.summaries import Summaries, anchor, summary_on, system_with_summary
from bot.core.params import GenerationParams
from bot.core.prompt import Turn
from bot.core.window import Window, fit_window
from bot.engine.base import CancelToken, GenerationRequest, SamplingParams
from bot.errors import InputTooLong
from bot.settings import Settings
from bot.store.schema import ChatRow, TurnRow


@dataclass(frozen=True)
class Prepared:
    """A reply ready to be written: its stored row, its window and its request."""

    reply_id: int
    window: Window
    request: GenerationRequest
    prefix: str = ""
    """The text the reply continues (Continue), shown before the new text."""


class ReplyPreparation:
    """Builds the window and the request of a chat's next reply."""

    def __init__(
        self, *, settings: Settings, model: RunningModel, chat_settings: ChatSettings,
        summaries: Summaries | None = None,
    ) -> None:
        self._settings = settings
        self._model = model
        self._chat_settings = chat_settings
        self._summaries = summaries

    def system(self, chat: ChatRow) -> str | None:
        """The system text of the chat's window: its system prompt, then its summary."""
        system = self._chat_settings.system_of(chat)
        if chat.summary and summary_on(chat) and self._settings.summary_tokens:
            return system_with_summary(system, self._model.chat_format.default_system,
                                       chat.summary)
        return system

    async def window(
        self, chat: ChatRow, params: GenerationParams, turns: list[Turn]
    ) -> Window:
        """The prompt of the chat's next reply: system prompt (and summary) and the turns that
        fit. Where the summary leaves no room for the question, the window goes without it."""
        count = self._model.engine.count_tokens
        system = self.system(chat)
        try:
            return await fit_window(self._model.chat_format, system, turns,
                                    budget=params.prompt_budget, count_tokens=count)
        except InputTooLong:
            if system == self._chat_settings.system_of(chat):
                raise
        return await fit_window(self._model.chat_format, self._chat_settings.system_of(chat),
                                turns, budget=params.prompt_budget, count_tokens=count)

    async def fit(
        self, chat: ChatRow, params: GenerationParams, rows: list[TurnRow],
        *, tail: Turn | None = None,
    ) -> tuple[Window, list[Turn]]:
        """The window of a reply to the stored turns `rows` (and `tail`, a turn not stored:
        the reply being continued); the turns that left the window go to the summary."""
        turns = [turn_of(row) for row in rows] + ([tail] if tail is not None else [])
        window = await self.window(chat, params, turns)
        if window.first_turn and self._summaries is not None:
            self._summaries.left_window(chat.id, anchor(rows[window.first_turn]))
        return window, turns

    def request(
        self, chat: ChatRow, params: GenerationParams, window: Window, turns: list[Turn],
        cancel: CancelToken, *, seed: int | None = None,
    ) -> GenerationRequest:
        return GenerationRequest(
            chat_key=str(chat.id),
            prompt=window.prompt,
            sampling=SamplingParams(
                n_predict=params.n_predict,
                seed=self._settings.seed if seed is None else seed,
                **params.sampling(),
            ),
            stop=self._model.chat_format.stop,
            cancel=cancel,
            system=self.system(chat),
            turns=tuple(turns[window.first_turn:]),
        )


def turn_of(row: TurnRow) -> Turn:
    if row.role == "user":
        return Turn("user", row.text, row.speaker, speaker_id=row.user_id)
    return Turn("assistant", row.text)
