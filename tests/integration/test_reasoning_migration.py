"""Migration 0011 (thinking models), on SQLite and PostgreSQL: a chat's /reasoning and
/reasoning_budget columns and a reply's thinking arrive empty (the configured default, nothing
thought) with every older value kept, and go again on the way down."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import inspect, pool
from sqlalchemy.ext.asyncio import create_async_engine

from bot.core.chats import ChatRef
from bot.store import repository as repo
from bot.store.database import alembic_config, migrate, migrate_async, open_database, sessions
from bot.store.schema import ChatRow, TurnRow
from tests.integration.test_migrations import sql


def columns(url: str, table: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                found = await connection.run_sync(lambda sync: inspect(sync).get_columns(table))
                return {column["name"] for column in found}
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_0011_adds_the_reasoning_knobs_and_the_thinking_and_takes_them_away(
    database_url: str,
) -> None:
    migrate(database_url, "0010")
    sql(database_url, "insert into chats (id, kind, window_start, created_at, updated_at, temp) "
                      "values (7, 'private', 0, '2026-01-01', '2026-01-01', 0.7)")
    sql(database_url, "insert into turns (chat_id, role, state, text, delivered, created_at) "
                      "values (7, 'assistant', 'complete', 'an answer', true, '2026-01-01')")
    migrate(database_url, "0011")
    assert {"reasoning", "reasoning_budget"} <= columns(database_url, "chats")
    assert sql(database_url, "select temp, reasoning, reasoning_budget from chats") == [
        (0.7, None, None)]
    assert sql(database_url, "select text, thinking from turns") == [("an answer", None)]
    command.downgrade(alembic_config(database_url), "0010")
    assert not {"reasoning", "reasoning_budget"} & columns(database_url, "chats")
    assert "thinking" not in columns(database_url, "turns")
    assert sql(database_url, "select temp from chats") == [(0.7,)]


async def test_the_reasoning_knobs_and_the_thinking_are_stored(database_url: str) -> None:
    await migrate_async(database_url)
    database = open_database(database_url)
    try:
        async with sessions(database)() as session:
            chat = await repo.get_or_create_chat(session, ChatRef(8, "private"))
            await repo.set_chat_values(session, chat.id, reasoning="show", reasoning_budget=-1)
            turn = await repo.add_user_turn(session, chat.id, "why?")
            reply = await repo.start_reply(session, turn)
            await repo.finish_reply(session, reply, "Because.", reason="eos", n_tokens=9,
                                    thinking="Let me think.")
            await session.commit()
        async with sessions(database)() as session:
            stored = await session.get(ChatRow, 8)
            assert stored is not None
            assert repo.stored_knobs(stored) == {"reasoning": "show", "reasoning_budget": -1}
            row = await session.get(TurnRow, reply.id)
            assert row is not None and (row.text, row.thinking) == ("Because.", "Let me think.")
    finally:
        await database.dispose()
