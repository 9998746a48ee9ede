"""Opening the database: the async engine, sessions, and Alembic upgrades to the newest schema."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bot.errors import ConfigError

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent.parent / "migrations"


PRIVATE = 0o600
"""The mode of the files holding conversations: the bot's user reads them, nobody else."""
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _prepare_sqlite_path(url: str) -> None:
    """A SQLite database file private to the bot's user before SQLite opens it: SQLite creates
    its -wal, -shm and -journal files with the database file's mode, so they are private too.
    An existing file (and companions) made under a looser umask is made private."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if parsed.database.startswith("file:"):
        return  # a URI filename: SQLite resolves it, not a path of ours
    path = Path(parsed.database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
    except FileExistsError:
        pass
    for file in (path, *(path.with_name(path.name + end) for end in SQLITE_COMPANIONS)):
        try:
            if file.stat().st_mode & 0o777 != PRIVATE:
                file.chmod(PRIVATE)
        except FileNotFoundError:
            continue
        except PermissionError:  # another user's file: say so, it still works
            log.warning("%s is not private to the bot's user and cannot be made so", file)


def open_database(url: str) -> AsyncEngine:
    """Create the async engine; SQLite gets WAL, full sync and foreign keys on every connection.
    A server's pooled connections are checked before use, so a restarted PostgreSQL costs no
    message. Errors never carry a statement's parameters (users' messages) into logs and
    alerts: the log names chats and turns by id only."""
    try:
        _prepare_sqlite_path(url)
        engine = create_async_engine(
            url, pool_pre_ping=make_url(url).get_backend_name() != "sqlite", hide_parameters=True,
        )
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

    else:
        event.listen(engine.sync_engine, "handle_error", _without_row_values, retval=True)
    return engine


def _without_row_values(context: ExceptionContext) -> BaseException | None:
    """The error without the server's DETAIL line: PostgreSQL quotes the values of the row or
    key that failed there (`Failing row contains (..., <a message>, ...)`)."""
    error, orig = context.sqlalchemy_exception, context.original_exception
    if not isinstance(error, DBAPIError) or "\nDETAIL:" not in str(orig):
        return None
    orig.args = (str(orig).split("\nDETAIL:", 1)[0],)
    cause: BaseException | None = orig.__cause__  # the driver's own error, logged with it
    while cause is not None:
        if getattr(cause, "detail", None):
            cause.detail = None  # type: ignore[attr-defined]
        cause = cause.__cause__
    return DBAPIError.instance(
        context.statement, None, orig, context.dialect.loaded_dbapi.Error,
        hide_parameters=True, connection_invalidated=context.invalidate_pool_on_disconnect
        and context.is_disconnect, dialect=context.dialect,
    )


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
