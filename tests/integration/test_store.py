"""The store keeps the same things on SQLite and on PostgreSQL where SQLite is lenient and
PostgreSQL is not (long names, NUL characters, a float for an integer knob), and gives them back
the same (times in aware UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.core.chats import ChatRef
from bot.store import repository as repo
from bot.store.database import migrate_async, open_database, sessions
from bot.store.schema import ChatRow, TurnRow


async def test_what_one_database_keeps_the_other_keeps_too(database_url: str) -> None:
    await migrate_async(database_url)
    database = open_database(database_url)
    try:
        factory = sessions(database)
        chat_id, big, before = -1_002_000_000_001, 2**40, datetime.now(UTC)
        async with factory() as session:
            chat = await repo.get_or_create_chat(session, ChatRef(chat_id, "supergroup", "T" * 300))
            # A Telegram full name is up to 129 characters; the model may write a NUL.
            question = await repo.add_user_turn(
                session, chat.id, "a\x00b", speaker="S" * 129, user_id=big, message_id=big
            )
            await repo.set_chat_values(session, chat.id, top_k=40.0, temp=1, system_prompt="\x00")
            await session.commit()
        async with factory() as session:
            chat = await session.get(ChatRow, chat_id)
            turn = await session.get(TurnRow, question.id)
            assert chat is not None and turn is not None
            assert chat.title == "T" * 256 and chat.system_prompt == "\ufffd"
            assert repo.stored_knobs(chat) == {"top_k": 40, "temp": 1.0}
            assert isinstance(chat.top_k, int)
            assert (turn.text, turn.speaker) == ("a\ufffdb", "S" * 128)
            assert (turn.user_id, turn.message_id, turn.delivered) == (big, big, True)
            assert [t.id for t in await repo.unfinished_questions(session)] == [turn.id]
            # Aware UTC from both (SQLite alone would give naive datetimes).
            assert turn.created_at.utcoffset() == timedelta(0)
            assert abs(turn.created_at - before) < timedelta(minutes=1)
    finally:
        await database.dispose()
