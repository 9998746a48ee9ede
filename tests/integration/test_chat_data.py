"""What the store keeps of a chat, on SQLite and on PostgreSQL: /forget deletes a chat's turns
(replies refer to their questions), the retention period prunes old turns but never those of a
reply in progress, and a chat reads back in conversation order for export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.core.chats import ChatRef
from bot.store import chat_data
from bot.store import repository as repo
from bot.store.database import Sessions, migrate_async, open_database, sessions
from bot.store.schema import ChatRow, TurnRow, utcnow

pytestmark = pytest.mark.timeout(60)

GROUP = ChatRef(-100_777, "supergroup", "Llama fans")
PRIVATE = ChatRef(4242, "private", "Alice Smith")


@pytest.fixture
async def factory(database_url: str) -> AsyncIterator[Sessions]:
    await migrate_async(database_url)
    database = open_database(database_url)
    try:
        yield sessions(database)
    finally:
        await database.dispose()


async def exchange(factory: Sessions, ref: ChatRef, question: str, answer: str | None, *,
                   age: timedelta = timedelta(0), speaker: str | None = None,
                   delivered: bool = True) -> tuple[int, int | None]:
    """A question and (unless `answer` is None) its reply, both written `age` ago. A reply of
    None leaves the question pending; `delivered=False` leaves the reply undelivered."""
    async with factory() as session:
        chat = await repo.get_or_create_chat(session, ref)  # a topic has a row of its own
        turn = await repo.add_user_turn(session, chat.id, question, speaker=speaker,
                                        thread_id=ref.thread_id)
        reply_id = None
        if answer is not None:
            reply = await repo.start_reply(session, turn)
            await repo.finish_reply(session, reply, answer, reason="eos", n_tokens=3)
            reply.delivered = delivered
            reply_id = reply.id
        await session.flush()
        when = utcnow() - age
        ids = [turn.id] + ([reply_id] if reply_id else [])
        await session.execute(update(TurnRow).where(TurnRow.id.in_(ids)).values(created_at=when))
        await session.commit()
    return turn.id, reply_id


async def texts(factory: Sessions, chat_id: int) -> list[str]:
    async with factory() as session:
        rows = (await session.execute(
            select(TurnRow.text).where(TurnRow.chat_id == chat_id).order_by(TurnRow.id)
        )).scalars()
        return list(rows)


async def test_forgetting_a_chat_deletes_its_turns_and_keeps_its_settings(factory: Sessions) -> None:
    await exchange(factory, GROUP, "first", "one", speaker="Alice")
    await exchange(factory, GROUP, "second", "two", speaker="Bob")
    await exchange(factory, PRIVATE, "mine", "yours")
    async with factory() as session:
        await repo.set_chat_values(session, GROUP.chat_id, temp=0.7, system_prompt="Be brief.")
        await session.commit()
    async with factory() as session:
        stored = await chat_data.stored_chat(session, GROUP.chat_id)
    assert stored.turns == 4 and stored.first is not None
    assert stored.first.utcoffset() == timedelta(0)
    async with factory() as session:
        assert await chat_data.forget_chat(session, GROUP.chat_id) == 4
        await session.commit()
    assert await texts(factory, GROUP.chat_id) == []
    assert await texts(factory, PRIVATE.chat_id) == ["mine", "yours"]
    async with factory() as session:
        chat = await session.get(ChatRow, GROUP.chat_id)
        assert chat is not None and chat.temp == pytest.approx(0.7)
        assert chat.system_prompt == "Be brief."
        assert await chat_data.stored_chat(session, GROUP.chat_id) == chat_data.StoredChat(0, None)
    # The chat goes on from nothing.
    await exchange(factory, GROUP, "again", "hello again", speaker="Alice")
    async with factory() as session:
        chat = await session.get(ChatRow, GROUP.chat_id)
        assert chat is not None
        assert [t.text for t in await repo.conversation(session, chat)] == ["again", "hello again"]


async def test_retention_prunes_old_turns_but_not_a_reply_in_progress(factory: Sessions) -> None:
    old = timedelta(days=10)
    await exchange(factory, GROUP, "old question", "old answer", age=old, speaker="Alice")
    await exchange(factory, GROUP, "new question", "new answer", speaker="Bob")
    await exchange(factory, PRIVATE, "old but waiting", None, age=old)
    await exchange(factory, PRIVATE, "old, reply not delivered", "stored reply", age=old,
                   delivered=False)
    question, _ = await exchange(factory, PRIVATE, "old, being answered", None, age=old)
    async with factory() as session:  # a reply being written to an old question
        turn = await session.get(TurnRow, question)
        assert turn is not None
        streaming = await repo.start_reply(session, turn)
        await session.execute(update(TurnRow).where(TurnRow.id == streaming.id)
                              .values(created_at=utcnow() - old))
        await session.commit()
    await exchange(factory, ChatRef(9, "private", "Other"), "old and done", "bye", age=old)
    async with factory() as session:
        for chat_id in (GROUP.chat_id, PRIVATE.chat_id):
            await session.execute(update(ChatRow).where(ChatRow.id == chat_id)
                                  .values(summary="What they said.", summary_upto=question))
        await session.commit()
    async with factory() as session:
        chats = await chat_data.prune_turns(session, before=utcnow() - timedelta(days=7))
        await session.commit()
    assert chats == {GROUP.chat_id, 9}
    async with factory() as session:
        summaries = dict((await session.execute(select(ChatRow.id, ChatRow.summary))).all())
    assert summaries[GROUP.chat_id] is None  # written from the deleted turns
    assert summaries[PRIVATE.chat_id] == "What they said."  # lost nothing
    assert await texts(factory, GROUP.chat_id) == ["new question", "new answer"]
    assert await texts(factory, PRIVATE.chat_id) == [
        "old but waiting", "old, reply not delivered", "stored reply", "old, being answered", "",
    ]
    assert await texts(factory, 9) == []
    async with factory() as session:  # nothing more to prune
        assert await chat_data.prune_turns(session, before=utcnow() - timedelta(days=7)) == set()


async def test_a_chat_reads_back_in_conversation_order(factory: Sessions) -> None:
    async with factory() as session:
        await repo.get_or_create_chat(session, GROUP)
        first = await repo.add_user_turn(session, GROUP.chat_id, "first?", speaker="Alice")
        second = await repo.add_user_turn(session, GROUP.chat_id, "second?", speaker="Bob")
        # The second question is answered after the first, whose reply row comes later.
        reply_two = await repo.start_reply(session, second)
        reply_one = await repo.start_reply(session, first)
        await repo.finish_reply(session, reply_one, "one", reason="eos", n_tokens=1)
        await repo.finish_reply(session, reply_two, "two", reason="eos", n_tokens=1)
        await session.commit()
    topic = ChatRef(GROUP.chat_id, GROUP.kind, GROUP.title, thread_id=10)
    await exchange(factory, topic, "in a topic", "topical")
    async with factory() as session:
        found = await chat_data.chat_with_turns(session, GROUP.chat_id)
        assert found is not None
        [(chat, turns), (topic_row, topic_turns)] = found
        assert chat.title == "Llama fans" and topic_row.thread_id == 10
        assert [t.text for t in turns] == ["first?", "one", "second?", "two"]
        assert [t.text for t in topic_turns] == ["in a topic", "topical"]
        assert await chat_data.chat_with_turns(session, 123456) is None
        assert await chat_data.chat_with_turns(session, topic_row.id) is None  # not a chat


async def test_forgetting_clears_the_summary_and_spares_the_other_topics(factory: Sessions) -> None:
    await exchange(factory, GROUP, "general talk", "sure", speaker="Alice")
    ten = ChatRef(GROUP.chat_id, GROUP.kind, GROUP.title, thread_id=10)
    twenty = ChatRef(GROUP.chat_id, GROUP.kind, GROUP.title, thread_id=20)
    question, _ = await exchange(factory, ten, "topic ten", "ten it is", speaker="Bob")
    await exchange(factory, twenty, "topic twenty", "twenty", speaker="Bob")
    async with factory() as session:
        topic = await repo.get_or_create_chat(session, ten)
        topic.summary, topic.summary_upto, topic.summary_on = "They talked of ten.", question, False
        topic.temp = 0.3
        await session.commit()
        topic_id = topic.id
    async with factory() as session:
        assert await chat_data.forget_chat(session, topic_id) == 2
        await session.commit()
    async with factory() as session:
        topic = await session.get(ChatRow, topic_id, populate_existing=True)
        assert topic is not None and (topic.summary, topic.summary_upto) == (None, None)
        assert topic.summary_on is False and topic.temp == pytest.approx(0.3)
        found = await chat_data.chat_with_turns(session, GROUP.chat_id)
    assert found is not None
    assert [[t.text for t in turns] for _, turns in found] == [
        ["general talk", "sure"], [], ["topic twenty", "twenty"],
    ]
