"""What both llama.cpp engines share on the event loop's side: the model's facts, prompt
tokenizing (`PromptTokenizer`), requests through the `RequestQueue` of one `Intake` (the
hand-over to the worker thread), and closing that thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from bot.core.prompt import Prompt
from bot.engine.base import CancelToken, GenerationEvent, GenerationRequest, ModelInfo, Queued
from bot.engine.intake import Intake
from bot.engine.tokens import PromptTokenizer


class LocalEngine:
    """A model loaded in this process, served by one worker thread (`_work` of a subclass)."""

    _info: ModelInfo
    _tokenize: PromptTokenizer
    _intake: Intake
    _thread: threading.Thread

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def queued(self) -> int:
        """Requests accepted and not finished (running and waiting)."""
        return self._intake.requests.pending

    def tokenize(self, prompt: Prompt) -> list[int]:
        """Tokenize segment by segment: markup with control tokens, user text as plain text."""
        return self._tokenize(prompt)

    async def count_tokens(self, prompt: Prompt) -> int:
        """Counted on a thread of its own: a long history's first tokenizing costs tens of
        milliseconds that the event loop (every other chat) must not wait for."""
        return len(await asyncio.to_thread(self.tokenize, prompt))

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        return self._intake.requests.stream(request)

    def turn(
        self, *, chat_key: str, cancel: CancelToken, share: str | None = None,
        on_place: Callable[[Queued], Awaitable[None]] | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Other CPU work waits its fair turn among the replies (see `TakesTurns`)."""
        return self._intake.requests.turn(chat_key=chat_key, cancel=cancel, share=share,
                                          on_place=on_place)

    async def aclose(self) -> None:
        """Cancel work in flight, let the worker thread end (the pool saves its chats' states
        then), and free the model."""
        if self._intake.closed:
            return
        self._intake.close()
        await asyncio.to_thread(self._thread.join)
        self._free()

    def _free(self) -> None:
        """Free the model and its context (the worker thread has ended)."""
        raise NotImplementedError
