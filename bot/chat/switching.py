"""Model switching (/model): list the models directory, load another model without a restart,
fit the chats' settings into it, and remember the choice across restarts."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.chat_settings import ChatSettings
from bot.chat.running import EngineLoader, RunningModel
from bot.chat.servers import without_passwords
from bot.engine.base import ServedElsewhere
from bot.errors import ModelError, UserError
from bot.i18n import N_, _
from bot.models.library import describe_models, find_model
from bot.store import repository as repo

log = logging.getLogger(__name__)

MODEL_STATE_KEY = "model"


class ModelSwitch:
    """/model for the bot's admins."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        model: RunningModel,
        chat_settings: ChatSettings,
        load: EngineLoader,
        models_dir: Path,
        configured: Path,
    ) -> None:
        self._sessions = sessions
        self._model = model
        self._chat_settings = chat_settings
        self._load = load
        self.models_dir = models_dir
        self._configured = configured
        self._switch_lock = asyncio.Lock()

    async def listing(self) -> str:
        engine = self._model.engine
        if isinstance(engine, ServedElsewhere):
            return served_listing(engine)
        current = engine.info.path
        return await asyncio.to_thread(describe_models, self.models_dir, current)

    async def switch(self, name: str) -> str:
        """Switch to a model of the models directory; the answer says what changed."""
        if isinstance(self._model.engine, ServedElsewhere):
            raise UserError(_(REMOTE_SWITCH))
        entry = await asyncio.to_thread(find_model, self.models_dir, name)
        if self._switch_lock.locked():
            raise UserError(_("A model switch is already in progress."))
        async with self._switch_lock:
            running = self._model.engine.info.path
            if entry.path.resolve() == running.resolve():
                return _("{file} is already the running model.", file=entry.path.name)
            try:
                await self._model.replace(self._load, entry.path)
            except ModelError as exc:
                log.error("switching to %s failed: %s", entry.path, exc)
                raise UserError(_("Could not load {file}: {error}. Still running {running}.",
                                  file=entry.path.name, error=exc,
                                  running=self._model.engine.info.path.name)) from exc
            changes = await self._chat_settings.clamp_all()
            await remember_model(self._sessions, self._configured, entry.path)
        info = self._model.engine.info
        lines = [_("Now running {file} ({name}, context {n_ctx}).", file=entry.path.name,
                   name=info.name, n_ctx=info.n_ctx)]
        if changes:
            lines.append(_("Settings that no longer fit were clamped:"))
            lines.extend(f"• {change}" for change in changes)
        return "\n".join(lines)


REMOTE_SWITCH = N_(
    "The model servers choose the model: start them with another model (llama-server -m FILE) "
    "or change `model` of an OpenAI backend in the bot's config. /model lists what they serve."
)


def served_listing(engine: ServedElsewhere) -> str:
    """/model under the remote engine: every server and the models it serves (no password
    shown)."""
    lines = [_("The replies come from these model servers:")]
    for url, up, models in engine.served_models():
        listed = ", ".join(models) or _("no model listed")
        if up:
            lines.append(_("• {url} (up): {models}", url=url, models=listed))
        else:
            lines.append(_("• {url} (down): {models}", url=url, models=listed))
    lines.append(_(REMOTE_SWITCH))
    return without_passwords("\n".join(lines))


async def chosen_model(sessions: async_sessionmaker[AsyncSession], configured: Path) -> Path:
    """The model picked with /model, if it was picked under the same configuration.

    Editing the configured model wins over an earlier /model choice.
    """
    async with sessions() as session:
        raw = await repo.get_state(session, MODEL_STATE_KEY)
    if not raw:
        return configured
    try:
        state = json.loads(raw)
        chosen, base = Path(state["model"]), Path(state["configured"])
    except (ValueError, KeyError, TypeError):
        return configured
    if base == configured and await asyncio.to_thread(chosen.is_file):
        return chosen
    return configured


async def remember_model(
    sessions: async_sessionmaker[AsyncSession], configured: Path, chosen: Path
) -> None:
    async with sessions() as session:
        await repo.set_state(
            session, MODEL_STATE_KEY,
            json.dumps({"model": str(chosen), "configured": str(configured)}),
        )
        await session.commit()
