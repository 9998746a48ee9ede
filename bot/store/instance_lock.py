"""One bot per database: a lock held for the life of the process that polls Telegram, so a
second `alpaca-bot start` on the same data stops at once with one clear line.

PostgreSQL: a session-level advisory lock on a connection of its own (the server drops it when
that connection ends, however the process ends). SQLite: `flock` on `<database file>.lock`
(the kernel drops it when the process ends)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from sqlalchemy import pool, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bot.errors import ConfigError

log = logging.getLogger(__name__)
LOCK_NAME = "alpaca-bot: the bot polling Telegram"
# pg_try_advisory_lock takes a signed 64-bit key; advisory locks are per database already.
ADVISORY_KEY = int.from_bytes(hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big", signed=True)


class AnotherInstanceRunning(ConfigError):
    """The database is already used by a running bot."""


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _refusal(url: URL, holder: str | None) -> AnotherInstanceRunning:
    where = url.render_as_string(hide_password=True) if url.get_backend_name() != "sqlite" else (
        url.database or ""
    )
    held = f", {holder}" if holder else ""
    return AnotherInstanceRunning(
        f"another alpaca-bot process is already running with this database ({where}{held}); "
        "stop it first"
    )


@contextlib.asynccontextmanager
async def hold_instance_lock(url: str) -> AsyncIterator[None]:
    """Hold the database's bot lock until the block ends; AnotherInstanceRunning if taken."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with _file_lock(parsed):
            yield
    elif parsed.get_backend_name() == "postgresql":
        async with _advisory_lock(parsed):
            yield
    else:
        raise ConfigError(f"no single-instance lock for {parsed.get_backend_name()} databases")


@contextlib.contextmanager
def _file_lock(url: URL) -> Iterator[None]:
    if url.database in (None, "", ":memory:"):
        yield  # a private in-memory database cannot be shared
        return
    path = Path(f"{Path(url.database).expanduser()}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot create the lock file {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            raise _refusal(url, holder or None) from None
        # The file stays: removing it would let a third process lock a new file of that name.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{_holder()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def _advisory_lock(url: URL) -> AsyncIterator[None]:
    connect_args = {}
    if url.get_driver_name() == "asyncpg":
        # What the refused process reports about the holder, from pg_stat_activity.
        connect_args = {"server_settings": {"application_name": f"alpaca-bot {_holder()}"[:63]}}
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    try:
        try:
            connection = await engine.connect()
        except Exception as exc:
            raise ConfigError(
                f"cannot connect to the database {url.render_as_string()}: {exc}"
            ) from exc
        # Autocommit: the lock belongs to the session, and no transaction stays open for days.
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        try:
            taken = (await connection.execute(
                text("select pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}
            )).scalar()
            if not taken:
                raise _refusal(url, await _advisory_holder(connection))
            yield
        finally:
            await connection.close()  # ends the session, and with it the lock
    finally:
        await engine.dispose()


async def _advisory_holder(connection: AsyncConnection) -> str | None:
    """Who holds the lock, as its application name says (None when the server will not say)."""
    key = ADVISORY_KEY & 0xFFFF_FFFF_FFFF_FFFF
    try:
        name = (await connection.execute(
            text(
                "select a.application_name from pg_locks l join pg_stat_activity a using (pid) "
                "where l.locktype = 'advisory' and l.granted and l.objsubid = 1 "
                "and l.database = (select oid from pg_database where datname = current_database()) "
                "and l.classid = :high and l.objid = :low"
            ),
            {"high": key >> 32, "low": key & 0xFFFF_FFFF},
        )).scalar()
    except Exception as exc:  # only a more helpful message is lost
        log.debug("could not tell who holds the bot lock: %s", exc)
        return None
    prefix = "alpaca-bot "
    return name[len(prefix):] if isinstance(name, str) and name.startswith(prefix) else None
