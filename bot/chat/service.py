"""The chat layer composed: each part built once and wired to the others, and named, so a front
end (and the command table) calls the part that does the work.

It knows neither Telegram nor llama.cpp: the engine is handed to it, and replies go into the
front end's `ReplySink`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.access import AccessControl
from bot.chat.activity import ChatActivity
from bot.chat.chat_settings import ChatSettings
from bot.chat.conversation import Conversation
from bot.chat.documents import ChatDocuments
from bot.chat.forgetting import ChatForgetting
from bot.chat.hearing import Hearing
from bot.chat.languages import ChatLanguages
from bot.chat.overview import SettingsOverview
from bot.chat.preparation import ReplyPreparation
from bot.chat.reading import Reading
from bot.chat.recovery import Recovery
from bot.chat.redo import ReplyRedo
from bot.chat.remembered import Remembered
from bot.chat.retention import Retention
from bot.chat.running import EngineLoader, RunningModel
from bot.chat.summaries import Summaries
from bot.chat.switching import ModelSwitch
from bot.chat.usage import Usage
from bot.core.templates import ChatFormat
from bot.engine.base import Engine
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store.database import ping

if TYPE_CHECKING:
    from bot.quantize.jobs import QuantizeJobs


class ChatService:
    """The chat layer's parts, shared by the Telegram bot and the console.

    A composition, not a facade: callers use the parts by name (`conversation.accept`,
    `chat_settings.change`, ...), each of which is front-end neutral already.
    """

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
        self.running_model = RunningModel(settings=settings, engine=engine,
                                          chat_format=chat_format)
        model = self.running_model
        self.chat_settings = ChatSettings(settings=settings, sessions=sessions, model=model)
        self.languages = ChatLanguages(sessions=sessions)
        self.summaries = Summaries(
            sessions=sessions, model=model, summary_tokens=settings.summary_tokens
        )
        self.documents = ChatDocuments(settings=settings, sessions=sessions, model=model)
        self.reading = Reading(settings=settings, model=model, documents=self.documents)
        preparation = ReplyPreparation(settings=settings, model=model,
                                       chat_settings=self.chat_settings, summaries=self.summaries,
                                       documents=self.documents)
        self.overview = SettingsOverview(settings=settings, sessions=sessions, model=model,
                                         chat_settings=self.chat_settings, preparation=preparation)
        self.activity = ChatActivity()
        self.conversation = Conversation(
            settings=settings, sessions=sessions, model=model, chat_settings=self.chat_settings,
            preparation=preparation, activity=self.activity, metrics=self.metrics,
        )
        self.redo = ReplyRedo(
            sessions=sessions, model=model, chat_settings=self.chat_settings,
            preparation=preparation, activity=self.activity, conversation=self.conversation,
            metrics=self.metrics,
        )
        self.recovery = Recovery(sessions=sessions)
        self.remembered = Remembered(sessions=sessions)
        self.forgetting = ChatForgetting(
            sessions=sessions, model=model, conversation=self.conversation,
            activity=self.activity,
        )
        self.retention = Retention(sessions=sessions, model=model, days=settings.retention_days)
        self.model_switch: ModelSwitch | None = None if load is None else ModelSwitch(
            sessions=sessions, model=model, chat_settings=self.chat_settings, load=load,
            models_dir=settings.models_directory, configured=configured_model or engine.info.path,
        )
        """/model: None where no loader was given (the console of a lent engine)."""
        self.jobs = jobs
        self.access = AccessControl(settings=settings, sessions=sessions, metrics=self.metrics)
        self.usage = Usage(settings=settings, sessions=sessions, metrics=self.metrics)
        self.hearing = Hearing(settings=settings, sessions=sessions, model=model,
                               metrics=self.metrics)
        self.metrics.watch_engine(lambda: model.engine, kind=settings.engine)

    async def ping_database(self) -> None:
        """Raise unless the database answers (for /readyz)."""
        await ping(self._sessions)
