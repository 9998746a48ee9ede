"""Alembic migrations, on SQLite and on PostgreSQL: from an empty database, down and up again,
from every older revision with its data, and matching the models."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.store.database import alembic_config, migrate, migrate_async
from bot.store.schema import Base

ROWS = Sequence[Mapping[str, Any]] | Mapping[str, Any] | None


async def run_sql(url: str, statement: str, rows: ROWS = None) -> list[tuple[Any, ...]]:
    """One statement in its own transaction, outside the bot's code; the rows it returns."""
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), rows)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


def sql(url: str, statement: str, rows: ROWS = None) -> list[tuple[Any, ...]]:
    return asyncio.run(run_sql(url, statement, rows))


async def tables_of(url: str) -> set[str]:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


def tables(url: str) -> set[str]:
    return asyncio.run(tables_of(url))


async def model_differences(url: str) -> list[Any]:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()


def older_revisions() -> list[str]:
    """Every revision but the newest, oldest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    return [revision.revision for revision in script.walk_revisions()][1:][::-1]


def test_upgrade_from_empty_and_back(database_url: str) -> None:
    migrate(database_url)
    assert {"chats", "turns", "quantize_jobs", "bot_state", "alembic_version"} <= tables(database_url)
    migrate(database_url)  # idempotent
    command.downgrade(alembic_config(database_url), "base")
    assert tables(database_url) == {"alembic_version"}
    migrate(database_url)
    assert {"chats", "turns"} <= tables(database_url)


async def test_migrations_match_the_models(database_url: str) -> None:
    await migrate_async(database_url)
    assert await model_differences(database_url) == []


def test_cli_migrate_accepts_the_plain_and_the_async_url(database_url: str, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from bot.cli import main

    plain = database_url.replace("+aiosqlite", "", 1).replace("+asyncpg", "", 1)
    short = plain.replace("postgresql:", "postgres:", 1)  # Heroku's spelling
    monkeypatch.setenv("ALPACA_BOT_DATA", str(tmp_path / "data"))
    for url in dict.fromkeys((plain, short, database_url)):
        monkeypatch.setenv("ALPACA_BOT_DB", url)
        assert main(["migrate"]) == 0
        assert "turns" in tables(database_url)
        command.downgrade(alembic_config(database_url), "base")
    assert "database is up to date" in capsys.readouterr().out


@pytest.mark.parametrize("revision", older_revisions())
def test_upgrade_from_an_older_revision_keeps_the_data(database_url: str, revision: str) -> None:
    migrate(database_url, revision)
    sql(
        database_url,
        "insert into chats (id, kind, window_start, created_at, updated_at, temp) "
        "values (5, 'private', 0, '2026-01-01', '2026-01-01', 0.7)",
    )
    sql(
        database_url,
        "insert into turns (chat_id, role, state, text, delivered, created_at) "
        "values (5, 'user', 'answered', 'kept', true, '2026-01-01')",
    )
    migrate(database_url)
    assert {"quantize_jobs", "bot_state"} <= tables(database_url)
    assert sql(database_url, "select temp from chats where id = 5") == [(0.7,)]
    assert sql(database_url, "select text, delivered from turns") == [("kept", True)]
    assert asyncio.run(model_differences(database_url)) == []


async def test_a_database_of_the_last_release_upgrades_with_every_value(database_url: str) -> None:
    """Chats with settings, turns, quantize jobs and bot state made by migrations 0001-0002
    keep every value after the upgrade; the new knobs start unset (the configured default)."""
    from bot.core.chats import ChatRef
    from bot.store import repository as repo
    from bot.store.database import open_database, sessions

    url = database_url
    await migrate_async(url, "0002")
    chat_row = {
        "id": -1001, "kind": "supergroup", "title": "Llamas", "temp": 0.7, "top_k": 12,
        "top_p": 0.8, "repeat_penalty": 1.1, "n_predict": 300, "n_ctx": 1024,
        "system_prompt": "Be brief.", "window_start": 2,
    }
    await run_sql(
        url,
        f"insert into chats ({', '.join(chat_row)}, created_at, updated_at) values "
        f"({', '.join(':' + name for name in chat_row)}, '2026-11-01', '2026-11-02')",
        chat_row,
    )
    await run_sql(
        url,
        "insert into chats (id, kind, window_start, created_at, updated_at) "
        "values (7, 'private', 0, '2026-11-01', '2026-11-01')",
    )
    turn_columns = (
        "id", "role", "state", "text", "speaker", "user_id", "reply_to", "message_id",
        "message_ids", "delivered", "stop_reason", "n_tokens",
    )
    await run_sql(
        url,
        f"insert into turns ({', '.join(turn_columns)}, chat_id, thread_id, created_at) "
        f"values ({', '.join(':' + name for name in turn_columns)}, -1001, 9, '2026-11-01')",
        [
            dict(zip(turn_columns, values, strict=True)) for values in (
                (2, "user", "answered", "Hi", "Alice", 42, None, 100, None, True, None, None),
                (3, "assistant", "complete", "Hello!", None, None, 2, 101, "101,102", True,
                 "eos", 5),
            )
        ],
    )
    await run_sql(
        url,
        "insert into quantize_jobs (id, requested_by, chat_id, progress_message_id, "
        "source, target, qtype, state, error, size_before, size_after, seconds, "
        "started_at, finished_at) values (4, 42, -1001, 103, '/m/a-f16.gguf', "
        "'/m/a-q4_0.gguf', 'q4_0', 'done', NULL, 2000, 600, 12.5, '2026-11-01', "
        "'2026-11-01')"
    )
    await run_sql(url, "insert into bot_state (key, value) values ('model', '{\"a\": 1}')")
    names = ("chats", "turns", "quantize_jobs", "bot_state")
    before = {table: await run_sql(url, f"select * from {table} order by 1") for table in names}
    await migrate_async(url)
    for table, rows in before.items():
        after = await run_sql(url, f"select * from {table} order by 1")
        assert len(after) == len(rows), table
        for old, new in zip(rows, after, strict=True):
            assert new[: len(old)] == old, table  # new columns come last
    new_knobs = await run_sql(url, "select min_p, repeat_last_n from chats")
    assert new_knobs == [(None, None), (None, None)]
    database = open_database(url)
    try:
        async with sessions(database)() as session:
            chat = await repo.get_or_create_chat(session, ChatRef(-1001, "supergroup"))
            assert repo.stored_knobs(chat) == {
                "temp": 0.7, "top_k": 12, "top_p": 0.8, "repeat_penalty": 1.1,
                "n_predict": 300, "n_ctx": 1024,
            }
            turns = await repo.conversation(session, chat)
            assert [(t.role, t.text) for t in turns] == [("user", "Hi"), ("assistant", "Hello!")]
            assert repo.decode_message_ids(turns[1].message_ids) == [101, 102]
            await repo.set_chat_values(session, chat.id, min_p=0.2, repeat_last_n=128)
            await session.commit()
            assert repo.stored_knobs(chat)["repeat_last_n"] == 128
    finally:
        await database.dispose()
