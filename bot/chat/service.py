"""The chat service: the one object front ends use, composed of the chat layer's parts.

It knows neither Telegram nor llama.cpp: the engine is handed to it, and replies go into the
front end's `ReplySink`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.chat_settings import ChatSettings
from bot.chat.conversation import Accepted, Conversation, Redo, ReplyOutcome
from bot.chat.followups import Followups
from bot.chat.forgetting import ChatForgetting
from bot.chat.languages import ChatLanguages
from bot.chat.recovery import Recovery, RecoveryItem
from bot.chat.remembered import Remembered
from bot.chat.retention import Retention
from bot.chat.running import EngineLoader, RunningModel
from bot.chat.sink import MessageRecorder, ReplySink
from bot.chat.summaries import Summaries
from bot.chat.switching import ModelSwitch
from bot.core.chats import ChatRef
from bot.core.knobs import BY_COMMAND
from bot.core.params import GenerationParams, ParamLimits
from bot.core.templates import ChatFormat
from bot.engine.base import Engine
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store.database import ping

if TYPE_CHECKING:
    from bot.quantize_jobs import QuantizeJobs


class ChatService:
    """Chat operations shared by the Telegram bot and the console."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        engine: Engine,
        chat_format: ChatFormat | None = None,
        load: EngineLoader | None = None,
        configured_model: Path | None = None,
        jobs: QuantizeJobs | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._sessions = sessions
        self.model = RunningModel(settings=settings, engine=engine, chat_format=chat_format)
        self.chat_settings = ChatSettings(settings=settings, sessions=sessions, model=self.model)
        self.languages = ChatLanguages(sessions=sessions)
        self.summaries = Summaries(
            sessions=sessions, model=self.model, summary_tokens=settings.summary_tokens
        )
        self.conversation = Conversation(
            settings=settings, sessions=sessions, model=self.model,
            chat_settings=self.chat_settings, metrics=self.metrics, summaries=self.summaries,
        )
        self.recovery = Recovery(sessions=sessions)
        self.followups = Followups(sessions=sessions, conversation=self.conversation)
        self.remembered = Remembered(sessions=sessions)
        self.forgetting = ChatForgetting(
            sessions=sessions, model=self.model, conversation=self.conversation
        )
        self.retention = Retention(
            sessions=sessions, model=self.model, days=settings.retention_days
        )
        self.models: ModelSwitch | None = None
        if load is not None:
            self.models = ModelSwitch(
                sessions=sessions, model=self.model, chat_settings=self.chat_settings, load=load,
                models_dir=settings.models_directory,
                configured=configured_model or engine.info.path,
            )
        self.jobs = jobs
        self.metrics.watch_engine(lambda: self.model.engine, kind=settings.engine)

    async def ping_database(self) -> None:
        """Raise unless the database answers (for /readyz)."""
        await ping(self._sessions)

    # -- the running model ----------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self.model.engine

    @property
    def chat_format(self) -> ChatFormat:
        return self.model.chat_format

    @property
    def limits(self) -> ParamLimits:
        return self.model.limits

    async def switch_engine(self, load: EngineLoader, model: Path) -> list[str]:
        """Replace the model without a restart; returns the settings changes it forced."""
        await self.model.replace(load, model)
        return await self.chat_settings.clamp_all()

    # -- conversation -----------------------------------------------------------------------

    async def accept(
        self, ref: ChatRef, text: str, *, speaker: str | None = None, user_id: int | None = None,
        message_id: int | None = None, thread_id: int | None = None,
    ) -> Accepted:
        return await self.conversation.accept(
            ref, text, speaker=speaker, user_id=user_id, message_id=message_id,
            thread_id=thread_id,
        )

    async def answer(
        self, accepted: Accepted, sink: ReplySink, *, redo: Redo | None = None
    ) -> ReplyOutcome | None:
        return await self.conversation.answer(accepted, sink, redo=redo)

    def recorder(self, accepted: Accepted) -> MessageRecorder:
        return self.conversation.recorder(accepted)

    def stop(self, chat_id: int) -> int:
        return self.conversation.stop(chat_id)

    # -- settings by command name (the knob table's `command`) -------------------------------

    async def params(self, ref: ChatRef) -> GenerationParams:
        return await self.chat_settings.params(ref)

    async def show_param(self, ref: ChatRef, command: str) -> str:
        return await self.chat_settings.show(ref, BY_COMMAND[command])

    async def set_param(self, ref: ChatRef, command: str, raw: str) -> str:
        return await self.chat_settings.change(ref, BY_COMMAND[command], raw)

    async def show_system(self, ref: ChatRef) -> str:
        return await self.chat_settings.show_system(ref)

    async def set_system(self, ref: ChatRef, text: str) -> str:
        return await self.chat_settings.set_system(ref, text)

    async def reset(self, ref: ChatRef) -> str:
        return await self.chat_settings.reset(ref)

    async def settings_text(self, ref: ChatRef) -> str:
        return await self.chat_settings.overview(ref)

    # -- recovery ------------------------------------------------------------------------------

    async def unfinished(self) -> list[RecoveryItem]:
        return await self.recovery.unfinished()

    async def deliver_stored(self, item: RecoveryItem, sink: ReplySink) -> None:
        await self.recovery.deliver_stored(item, sink)
