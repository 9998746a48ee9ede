"""The running model: the engine behind the seam, its chat format, how it thinks, its limits,
and the gate that lets a model switch wait for replies in progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from bot.core.params import ParamLimits
from bot.core.reasoning import ModelReasoning
from bot.core.templates import ChatFormat, choose_format
from bot.engine.base import Engine
from bot.settings import Settings

EngineLoader = Callable[[Path], Engine]
"""Loads a model file into an engine (blocking: it runs on a worker thread)."""


class RunningModel:
    """The engine every chat talks to, replaced in one piece by `replace`."""

    def __init__(
        self, *, settings: Settings, engine: Engine, chat_format: ChatFormat | None = None
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._fixed_format = chat_format
        self.reasoning = self._reasoning_of(chat_format or self._format_for(engine))
        """Whether the model thinks, and the chat format each chat's /reasoning asks for."""
        self.chat_format = self.reasoning.chat_format
        self._running = 0
        self.replies = 0
        """Holders of `serving()` writing a reply (background work not counted)."""
        self._switching = False
        self._idle = asyncio.Condition()
        self._reply_starts: list[Callable[[], None]] = []

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def limits(self) -> ParamLimits:
        info = self._engine.info
        return ParamLimits(max_ctx=min(self._settings.max_ctx, info.n_ctx_train, info.n_ctx))

    def _format_for(self, engine: Engine) -> ChatFormat:
        template = self._settings.template
        info = engine.info
        return choose_format(
            template if template in ("auto", "alpaca", "gguf") else _read_text(template),
            model_template=info.chat_template,
            bos_token=info.bos_token,
            eos_token=info.eos_token,
        )

    def _reasoning_of(self, chat_format: ChatFormat) -> ModelReasoning:
        return ModelReasoning(chat_format, setting=self._settings.reasoning,
                              tags=self._settings.thinking_tags)

    @asynccontextmanager
    async def serving(self, *, background: bool = False) -> AsyncIterator[Engine]:
        """Hold the model for one reply: a switch waits until every holder is done.

        `background` work (a summary) yields to replies: a reply's start calls the callbacks
        given to `on_reply_start`, and `until_no_replies` waits for a moment without replies."""
        async with self._idle:
            await self._idle.wait_for(lambda: not self._switching)
            self._running += 1
            if not background:
                self.replies += 1
        if not background:
            for callback in list(self._reply_starts):
                callback()
        try:
            yield self._engine
        finally:
            async with self._idle:
                self._running -= 1
                if not background:
                    self.replies -= 1
                self._idle.notify_all()

    def on_reply_start(self, callback: Callable[[], None]) -> None:
        self._reply_starts.append(callback)

    async def until_no_replies(self) -> None:
        async with self._idle:
            await self._idle.wait_for(lambda: self.replies == 0)

    async def replace(self, load: EngineLoader, model: Path) -> None:
        """Load `model` in place of the running one.

        Replies in progress finish first and new ones wait. The old model is freed before the
        new one loads (a home server rarely has memory for two); if the new one fails to load,
        the old one is loaded again and the error raised.
        """
        async with self._idle:
            self._switching = True
            await self._idle.wait_for(lambda: self._running == 0)
        try:
            old_path = self._engine.info.path
            await self._engine.aclose()
            try:
                self._engine = await asyncio.to_thread(load, model)
            except Exception:
                self._engine = await asyncio.to_thread(load, old_path)
                raise
            self.reasoning = self._reasoning_of(self._fixed_format
                                                or self._format_for(self._engine))
            self.chat_format = self.reasoning.chat_format
        finally:
            async with self._idle:
                self._switching = False
                self._idle.notify_all()


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()
