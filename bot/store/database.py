"""Opening the database: the async engine, sessions, and Alembic upgrades to the newest schema."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bot.errors import ConfigError

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent.parent / "migrations"


def _prepare_sqlite_path(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def open_database(url: str) -> AsyncEngine:
    """Create the async engine; SQLite gets WAL, full sync and foreign keys on every connection.
    A server's pooled connections are checked before use, so a restarted PostgreSQL costs no
    message."""
    try:
        _prepare_sqlite_path(url)
        engine = create_async_engine(url, pool_pre_ping=make_url(url).get_backend_name() != "sqlite")
    except Exception as exc:  # a malformed URL or a missing driver
        raise ConfigError(f"cannot open database {make_url(url).render_as_string()}: {exc}") from exc
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


Sessions = async_sessionmaker[AsyncSession]
"""Where every unit of database work gets its session (one per transaction)."""


def sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database to `revision` (blocking; runs its own event loop)."""
    from alembic import command

    _prepare_sqlite_path(url)
    try:
        command.upgrade(alembic_config(url), revision)
    except Exception as exc:
        raise ConfigError(f"database migration failed: {exc}") from exc


async def migrate_async(url: str, revision: str = "head") -> None:
    """`migrate` from async code: Alembic's async env needs a thread of its own."""
    await asyncio.to_thread(migrate, url, revision)


async def ping(sessions: Sessions) -> None:
    """Raise unless the database answers a trivial query (for /readyz)."""
    from sqlalchemy import text

    async with sessions() as session:
        await session.execute(text("SELECT 1"))
