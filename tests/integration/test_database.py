"""Opening the database: its errors carry no one's words, and its SQLite files are private."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bot.core.chats import ChatRef
from bot.store import repository as repo
from bot.store.database import migrate_async, open_database, sessions

DIARY = "Dear diary, the door code is xyzzy-7Q"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask a service often runs with: files readable by everyone unless made private."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_failing_statement_logs_and_alerts_no_message_text(
    database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    await migrate_async(database_url)
    database = open_database(database_url)
    try:
        async with sessions(database)() as session:
            await repo.get_or_create_chat(session, ChatRef(5, "private", "Alice"))
            await session.commit()
        with pytest.raises(DBAPIError) as failure:
            async with sessions(database)() as session:
                # A turn of a chat that does not exist: the foreign key refuses it.
                await repo.add_user_turn(session, 987654321, DIARY)
                await session.commit()
    finally:
        await database.dispose()
    error = failure.value
    # As handlers.on_error logs it and words the admins' alert.
    logging.getLogger("bot.telegram.handlers").error("error while handling an update",
                                                     exc_info=error)
    alert = f"⚠️ alpaca-bot error: {type(error).__name__}: {error}"
    assert "INSERT INTO turns" in alert  # what failed is still said
    assert DIARY not in caplog.text and DIARY not in alert
    assert "xyzzy" not in caplog.text and "xyzzy" not in alert


async def test_the_sqlite_database_and_its_journals_are_private(
    tmp_path: Path, loose_umask: None,
) -> None:
    path = tmp_path / "data" / "alpaca-bot.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate_async(url)
    database = open_database(url)
    try:
        async with sessions(database)() as session:
            await repo.get_or_create_chat(session, ChatRef(5, "private", "Alice"))
            await repo.add_user_turn(session, 5, DIARY)
            await session.commit()
            # While a connection is open in WAL mode, its -wal and -shm files exist.
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            assert all(file.exists() for file in files)
            assert {file.name: mode(file) for file in files} == {file.name: 0o600 for file in files}
    finally:
        await database.dispose()


async def test_a_database_made_under_a_loose_umask_is_made_private(
    tmp_path: Path, loose_umask: None,
) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as connection:  # as an older version left it: 0644
        connection.execute("CREATE TABLE t (x)")
    journal = path.with_name(path.name + "-journal")
    journal.write_bytes(b"")
    assert mode(path) == 0o644
    database = open_database(f"sqlite+aiosqlite:///{path}")
    await database.dispose()
    assert mode(path) == 0o600 and mode(journal) == 0o600


async def test_a_row_the_server_refuses_is_not_quoted(
    database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    # PostgreSQL's errors quote a failing row's values (`Failing row contains (...)`).
    await migrate_async(database_url)
    database = open_database(database_url)
    try:
        async with sessions(database)() as session:
            await repo.get_or_create_chat(session, ChatRef(5, "private", "Alice"))
            await session.commit()
        with pytest.raises(DBAPIError) as failure:
            async with sessions(database)() as session:
                await session.execute(text(
                    "INSERT INTO turns (chat_id, role, state, text, delivered, created_at) "
                    "VALUES (5, NULL, 'pending', :text, true, CURRENT_TIMESTAMP)"
                ), {"text": DIARY})
    finally:
        await database.dispose()
    logging.getLogger("bot.telegram.handlers").error("failed", exc_info=failure.value)
    assert "role" in str(failure.value)  # the column that failed is named
    assert "xyzzy" not in caplog.text and "xyzzy" not in str(failure.value)
