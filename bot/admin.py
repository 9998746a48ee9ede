"""Admin operations on the running bot: which model it runs, and switching to another."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.engine.base import Engine
from bot.errors import ModelError, UserError
from bot.models.library import describe_models, find_model
from bot.runtime import remember_model, resolve_model
from bot.service import ChatService
from bot.settings import Settings

log = logging.getLogger(__name__)


class ModelAdmin:
    """/model: list the models directory, switch the running model."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: Any,
        service: ChatService,
        load: Callable[[Path], Engine],
    ) -> None:
        self.settings = settings
        self._sessions = sessions
        self._service = service
        self._load = load
        self._switch_lock = asyncio.Lock()

    @property
    def models_dir(self) -> Path:
        return self.settings.models_directory

    async def listing(self) -> str:
        current = self._service.engine.info.path
        return await asyncio.to_thread(describe_models, self.models_dir, current)

    async def switch(self, name: str) -> str:
        entry = await asyncio.to_thread(find_model, self.models_dir, name)
        if self._switch_lock.locked():
            raise UserError("A model switch is already in progress.")
        async with self._switch_lock:
            if entry.path.resolve() == self._service.engine.info.path.resolve():
                return f"{entry.path.name} is already the running model."
            try:
                changes = await self._service.switch_engine(self._load, entry.path)
            except ModelError as exc:
                log.error("switching to %s failed: %s", entry.path, exc)
                raise UserError(f"Could not load {entry.path.name}: {exc}. Still running "
                                f"{self._service.engine.info.path.name}.") from exc
            await remember_model(self._sessions, resolve_model(self.settings), entry.path)
        info = self._service.engine.info
        lines = [f"Now running {entry.path.name} ({info.name}, context {info.n_ctx})."]
        if changes:
            lines.append("Settings that no longer fit were clamped:")
            lines.extend(f"• {change}" for change in changes)
        return "\n".join(lines)
