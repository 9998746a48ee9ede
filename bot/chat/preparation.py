"""Preparing a reply: its prompt window (the chat's system prompt and summary, then the newest
turns that fit the budget, read from the store newest first and only as far back as the budget
reaches) and the request the engine is given."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from bot.chat.chat_settings import ChatSettings
from bot.chat.documents import ChatDocuments
from bot.chat.running import RunningModel
from bot.chat.summaries import Summaries, anchor, summary_on, system_with_summary
from bot.core.params import GenerationParams
from bot.core.prompt import Turn
from bot.core.window import Window, fit_window
from bot.engine.base import CancelToken, GenerationRequest, SamplingParams
from bot.errors import InputTooLong
from bot.reading.context import FramedPassage, decode_context, render_question
from bot.settings import Settings
from bot.store import repository as repo
from bot.store.schema import ChatRow, TurnRow


@dataclass(frozen=True)
class Prepared:
    """A reply ready to be written: its stored row, its window and its request."""

    reply_id: int
    window: Window
    request: GenerationRequest
    prefix: str = ""
    """The text the reply continues (Continue), shown before the new text."""
    show_thinking: bool = field(default=False, kw_only=True)
    """The chat's /reasoning is `show`: a thinking model's thinking is shown with the reply."""


class ReplyPreparation:
    """Builds the window and the request of a chat's next reply."""

    def __init__(
        self, *, settings: Settings, model: RunningModel, chat_settings: ChatSettings,
        summaries: Summaries | None = None, documents: ChatDocuments | None = None,
    ) -> None:
        self._settings, self._model, self._chat_settings = settings, model, chat_settings
        self._summaries, self._documents = summaries, documents

    def system(self, chat: ChatRow) -> str | None:
        """The system text of the chat's window: its system prompt, then its summary."""
        system = self._chat_settings.system_of(chat)
        if chat.summary and summary_on(chat) and self._settings.summary_tokens:
            return system_with_summary(system, self._model.chat_format.default_system,
                                       chat.summary)
        return system

    async def fit(
        self, session: AsyncSession, chat: ChatRow, params: GenerationParams, *,
        up_to: int | None = None, without: int | None = None, tail: Turn | None = None,
        tell_summaries: bool = True,
    ) -> tuple[Window, list[TurnRow]]:
        """The window of the chat's next reply, and the stored turns in it (oldest first).

        Its turns are the conversation's up to question `up_to`, without turn `without`, then
        `tail` (a turn not stored: the reply being continued). Raises InputTooLong, or
        NoQuestion where there is no question. Turns that left the window go to the summary
        (unless `tell_summaries` is false). The newest question carries the passages of the
        chat's documents chosen for it (`bot.chat.documents`)."""
        read: list[TurnRow | None] = []
        """The rows read, newest first (None: the tail)."""

        async def newest_first() -> AsyncGenerator[Turn, None]:
            read.clear()
            if tail is not None:
                read.append(None)
                yield tail
            asked = False
            async with aclosing(repo.newest_turns(session, chat, up_to=up_to)) as rows:
                async for row in rows:
                    if row.id != without:
                        read.append(row)
                        passages: list[FramedPassage] = []
                        if not asked and row.role == "user":
                            asked = True
                            passages = await self._passages(session, chat, params, row)
                        yield turn_of(row, passages)

        window = await self._window(chat, params, newest_first)
        kept = [row for row in read[: len(window.turns)] if row is not None][::-1]
        if window.left_out and kept and tell_summaries and self._summaries is not None:
            self._summaries.left_window(chat.id, anchor(kept[0]))
        return window, kept

    async def _passages(
        self, session: AsyncSession, chat: ChatRow, params: GenerationParams, question: TurnRow
    ) -> list[FramedPassage]:
        if self._documents is None:
            return []
        about = next((item.document_id for item in decode_context(question.context)
                      if item.kind == "document"), None)
        return await self._documents.passages_for(session, chat, question.text, params,
                                                  about=about)

    async def _window(
        self, chat: ChatRow, params: GenerationParams,
        newest_first: Callable[[], AsyncGenerator[Turn, None]],
    ) -> Window:
        """The system prompt (and summary) and the turns that fit. Where the summary leaves no
        room for the question, the window goes without it."""

        async def fit(system: str | None) -> Window:
            async with aclosing(newest_first()) as turns:
                return await fit_window(chat_format, system, turns, budget=budget,
                                        count_tokens=self._model.engine.count_tokens)

        reasoning = self._model.reasoning
        chat_format = reasoning.format_for(params.reasoning)
        # A thinking model's thinking takes room in the context besides the answer's /n.
        budget = params.prompt_budget - reasoning.reserve(
            mode=params.reasoning, budget=params.reasoning_budget, room=params.prompt_budget)
        system, plain = self.system(chat), self._chat_settings.system_of(chat)
        try:
            return await fit(system)
        except InputTooLong:
            if system == plain:
                raise
        return await fit(plain)

    def request(
        self, chat: ChatRow, params: GenerationParams, window: Window, cancel: CancelToken,
        *, seed: int | None = None,
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
            thinking=self._model.reasoning.request(window.prompt, mode=params.reasoning,
                                                   budget=params.reasoning_budget),
            system=window.system,
            turns=window.turns,
            share=str(chat.parent_id or chat.id),  # a forum's topics take one turn together
        )


def turn_of(row: TurnRow, passages: list[FramedPassage] | None = None) -> Turn:
    """A stored turn as the model reads it: a question with its context (and `passages`)."""
    if row.role == "user":
        text = render_question(row.text, decode_context(row.context), passages or ())
        return Turn("user", text, row.speaker, speaker_id=row.user_id)
    return Turn("assistant", row.text)
