"""Reading a conversation from its newest turn back, a page at a time, on SQLite and on
PostgreSQL: the same turns in the reverse of conversation order, however replies interleave,
and only the pages the reader gets to."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.chats import ChatRef
from bot.store import repository as repo
from bot.store.database import migrate_async, open_database, sessions
from bot.store.schema import ChatRow, TurnRow

pytestmark = pytest.mark.timeout(120)

GROUP = ChatRef(-100_555, "supergroup", "Busy group")
OTHER = ChatRef(777, "private", "Someone else")


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate_async(database_url)
    database = open_database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


async def fill(database: AsyncEngine, questions: int, seed: int) -> None:
    """A group where replies come late (after other questions), some questions fail or wait,
    another chat's turns in between, and a /reset early on."""
    rng = random.Random(seed)
    async with sessions(database)() as session:
        await repo.get_or_create_chat(session, GROUP)
        await repo.get_or_create_chat(session, OTHER)
        waiting = []
        for i in range(questions):
            question = await repo.add_user_turn(session, GROUP.chat_id, f"q{i}", speaker="A")
            await repo.add_user_turn(session, OTHER.chat_id, f"other {i}")
            waiting.append(question)
            if i == 3:
                await repo.reset_conversation(session, GROUP.chat_id)
            while waiting and rng.random() < 0.6:
                asked = waiting.pop(rng.randrange(len(waiting)))
                if rng.random() < 0.1:
                    await repo.fail_user_turn(session, asked.id)
                    continue
                reply = await repo.start_reply(session, asked)
                await repo.finish_reply(session, reply, f"a{asked.text}", reason="eos",
                                        n_tokens=1)
        await session.commit()


@pytest.mark.parametrize("seed", range(3))
async def test_newest_first_is_the_conversation_backwards(database: AsyncEngine, seed: int) -> None:
    await fill(database, 150, seed)
    async with sessions(database)() as session:
        chat = await session.get(ChatRow, GROUP.chat_id)
        assert chat is not None
        forward = await repo.conversation(session, chat)
        assert len(forward) > 8 * repo.FIRST_PAGE  # several pages
        backward = [row.id async for row in repo.newest_turns(session, chat)]
        assert backward == [row.id for row in reversed(forward)]
        stored = (await session.execute(
            select(func.count()).select_from(TurnRow).where(TurnRow.chat_id == chat.id,
                                                             TurnRow.id >= chat.window_start)
        )).scalar_one()
        assert await repo.count_turns(session, chat) == stored >= len(forward)
        last = await repo.last_turn(session, chat)
        assert last is not None and last.id == forward[-1].id
        questions = [row.id for row in forward if row.role == "user"]
        for up_to in (questions[0], questions[len(questions) // 2], questions[-1]):
            expected = await repo.conversation(session, chat, up_to=up_to)
            got = [row.id async for row in repo.newest_turns(session, chat, up_to=up_to)]
            assert got == [row.id for row in reversed(expected)]
            assert all(repo.conversation_order(row)[0] <= up_to for row in expected)
        middle = questions[len(questions) // 3]
        after = await repo.conversation(session, chat, after=middle)
        assert [row.id for row in after] == [
            row.id for row in forward if repo.conversation_order(row)[0] > middle]


async def test_only_the_pages_read_are_fetched(database: AsyncEngine) -> None:
    async with sessions(database)() as session:
        await repo.get_or_create_chat(session, GROUP)
        for i in range(300):
            question = await repo.add_user_turn(session, GROUP.chat_id, f"q{i}")
            reply = await repo.start_reply(session, question)
            await repo.finish_reply(session, reply, f"a{i}", reason="eos", n_tokens=1)
        await session.commit()
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(database.sync_engine, "before_cursor_execute", record)
    async with sessions(database)() as session:
        chat = await session.get(ChatRow, GROUP.chat_id)
        assert chat is not None
        statements.clear()
        newest = repo.newest_turns(session, chat)
        taken = [await anext(newest) for _ in range(3)]
        await newest.aclose()
        assert len(taken) == 3 and len(statements) == 1
        assert await repo.last_turn(session, chat) is not None and len(statements) == 2
