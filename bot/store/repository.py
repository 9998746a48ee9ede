"""Async functions over the tables; each takes the session it works in and commits nothing
unless its name says so. Callers decide transaction boundaries."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.chats import ChatRef
from bot.core.knobs import BY_NAME, KNOBS, Value
from bot.store.schema import BotStateRow, ChatRow, DocumentRow, TurnRow, utcnow


def stored_knobs(chat: ChatRow) -> dict[str, Value]:
    """The knob values a chat stores itself (columns left NULL follow the default)."""
    values = {knob.name: getattr(chat, knob.name) for knob in KNOBS}
    return {name: value for name, value in values.items() if value is not None}


def encode_message_ids(ids: Sequence[int]) -> str:
    return ",".join(str(int(i)) for i in ids)


def decode_message_ids(text: str | None) -> list[int]:
    return [int(part) for part in (text or "").split(",") if part]


FIRST_PAGE, LAST_PAGE = 8, 256
"""Rows in the first and the largest page `newest_turns` reads."""
TOPIC_IDS_BELOW = -(1 << 62)
"""Topic rows get ids below this, where no Telegram chat id lies (those fit in 52 bits)."""


async def get_or_create_chat(session: AsyncSession, ref: ChatRef) -> ChatRow:
    """The conversation `ref` names: the chat's row, or its topic's (created on first contact)."""
    if ref.thread_id is not None:
        return await _get_or_create_topic(session, ref)
    return await _get_or_create_row(session, ref)


async def _get_or_create_topic(session: AsyncSession, ref: ChatRef) -> ChatRow:
    parent = await _get_or_create_row(session, ChatRef(ref.chat_id, ref.kind, ref.title))
    query = select(ChatRow).where(ChatRow.parent_id == parent.id, ChatRow.thread_id == ref.thread_id)
    for _ in range(5):
        topic = (await session.execute(query)).scalar_one_or_none()
        if topic is not None:
            return topic
        lowest = await session.scalar(select(func.min(ChatRow.id)).where(ChatRow.id < TOPIC_IDS_BELOW))
        try:
            async with session.begin_nested():
                topic = ChatRow(id=(lowest or TOPIC_IDS_BELOW) - 1, kind=ref.kind, title=ref.title,
                                window_start=0, parent=parent, thread_id=ref.thread_id)
                session.add(topic)
            return topic
        except IntegrityError:  # another topic took the id (or this one was just created)
            continue
    raise RuntimeError(f"could not create a row for topic {ref.thread_id} of chat {ref.chat_id}")


async def _get_or_create_row(session: AsyncSession, ref: ChatRef) -> ChatRow:
    chat = await session.get(ChatRow, ref.chat_id)
    if chat is None:
        try:
            async with session.begin_nested():
                chat = ChatRow(id=ref.chat_id, kind=ref.kind, title=ref.title, window_start=0,
                               parent=None)
                session.add(chat)
        except IntegrityError:  # created at the same moment by another task
            chat = await session.get(ChatRow, ref.chat_id, populate_existing=True)
            if chat is None:
                raise
    elif ref.title and chat.title != ref.title:
        chat.title = ref.title
    return chat


async def chats_with_window_settings(session: AsyncSession) -> Sequence[ChatRow]:
    """Chats that store their own value of a window knob (/ctx or /n)."""
    columns = [getattr(ChatRow, knob.name) for knob in KNOBS if knob.role == "window"]
    result = await session.execute(
        select(ChatRow).where(or_(*(column.is_not(None) for column in columns))).order_by(ChatRow.id)
    )
    return result.scalars().all()


async def get_state(session: AsyncSession, key: str) -> str | None:
    row = await session.get(BotStateRow, key)
    return row.value if row else None


async def set_state(session: AsyncSession, key: str, value: str) -> None:
    row = await session.get(BotStateRow, key)
    if row is None:
        session.add(BotStateRow(key=key, value=value))
    else:
        row.value = value


CHAT_FIELDS = frozenset(
    {"system_prompt", "title", "summary", "summary_upto", "summary_on", "language"}
)
"""The chat columns besides the knobs that `set_chat_values` may change."""


async def set_chat_values(session: AsyncSession, chat_id: int, **values: object) -> None:
    """Change a chat's stored knobs (by knob name), its system prompt or its summary."""
    unknown = set(values) - set(BY_NAME) - CHAT_FIELDS
    if unknown:
        raise KeyError(f"not a chat setting: {', '.join(sorted(unknown))}")
    for name, value in values.items():
        # PostgreSQL's driver refuses a float for an integer column (SQLite would convert it).
        if name in BY_NAME and isinstance(value, int | float):
            values[name] = BY_NAME[name].python_type(value)
    await session.execute(update(ChatRow).where(ChatRow.id == chat_id).values(**values))


async def add_user_turn(
    session: AsyncSession,
    chat_id: int,
    text: str,
    *,
    speaker: str | None = None,
    user_id: int | None = None,
    message_id: int | None = None,
    thread_id: int | None = None,
    language: str | None = None,
    context: str | None = None,
) -> TurnRow:
    turn = TurnRow(
        chat_id=chat_id, role="user", state="pending", text=text, speaker=speaker,
        user_id=user_id, message_id=message_id, thread_id=thread_id, delivered=True,
        language=language, context=context,
    )
    session.add(turn)
    await session.flush()
    return turn


async def reply_for(session: AsyncSession, user_turn_id: int) -> TurnRow | None:
    """The reply row of a user turn, if one was started."""
    result = await session.execute(
        select(TurnRow).where(TurnRow.reply_to == user_turn_id, TurnRow.role == "assistant")
    )
    return result.scalars().first()


async def start_reply(session: AsyncSession, user_turn: TurnRow) -> TurnRow:
    """Create (or, after a crash, reuse) the reply row of `user_turn`, in state streaming."""
    reply = await reply_for(session, user_turn.id)
    if reply is None:
        reply = TurnRow(
            chat_id=user_turn.chat_id, role="assistant", state="streaming", text="",
            reply_to=user_turn.id, thread_id=user_turn.thread_id, delivered=False,
        )
        session.add(reply)
    else:
        reply.state, reply.text, reply.delivered = "streaming", "", False
    await session.flush()
    return reply


async def finish_reply(
    session: AsyncSession, reply: TurnRow, text: str, *, reason: str, n_tokens: int,
    thinking: str | None = None,
) -> None:
    """Store a finished reply (its answer, and apart what the model thought before it) and
    mark its question answered (one transaction)."""
    reply.text, reply.state, reply.stop_reason = text, "complete", reason
    reply.thinking = thinking
    reply.n_tokens, reply.finished_at = n_tokens, utcnow()
    if reply.reply_to is not None:
        await session.execute(
            update(TurnRow).where(TurnRow.id == reply.reply_to).values(state="answered")
        )


async def fail_user_turn(session: AsyncSession, user_turn_id: int) -> None:
    await session.execute(update(TurnRow).where(TurnRow.id == user_turn_id).values(state="failed"))
    await session.execute(
        update(TurnRow)
        .where(TurnRow.reply_to == user_turn_id, TurnRow.state == "streaming")
        .values(state="failed")
    )


def _in_conversation(chat: ChatRow) -> ColumnElement[bool]:
    """The turns of the chat's current conversation (since /reset): questions answered or
    waiting, replies complete."""
    return (
        (TurnRow.chat_id == chat.id)
        & (TurnRow.id >= chat.window_start)
        & (
            ((TurnRow.role == "user") & TurnRow.state.in_(("answered", "pending")))
            | ((TurnRow.role == "assistant") & (TurnRow.state == "complete"))
        )
    )


_ANCHOR = func.coalesce(TurnRow.reply_to, TurnRow.id)
"""`conversation_order`'s anchor in SQL: a reply sorts at its question."""


async def conversation(
    session: AsyncSession, chat: ChatRow, *, after: int | None = None, up_to: int | None = None
) -> list[TurnRow]:
    """The turns of the chat's current conversation (since /reset), oldest first.

    A reply sorts right after its question even if other messages arrived in between. Only
    turns that sort after turn `after` and up to question `up_to` are read, where given.
    """
    query = select(TurnRow).where(_in_conversation(chat))
    if after is not None:
        query = query.where(TurnRow.id > after, _ANCHOR > after)
    if up_to is not None:
        query = query.where(_ANCHOR <= up_to)
    rows = list((await session.execute(query)).scalars())
    return sorted(rows, key=conversation_order)


async def newest_turns(
    session: AsyncSession, chat: ChatRow, *, up_to: int | None = None
) -> AsyncGenerator[TurnRow, None]:
    """`conversation` backwards, from its newest turn, read a page at a time (each twice the
    last, from FIRST_PAGE to LAST_PAGE rows) as the caller goes on: only as far back as it goes.

    Pages go down the turn ids (the chat's index); a reply written after later questions has a
    higher id than its place, so a row is handed out once no unread row can sort after it.
    """
    query = select(TurnRow).where(_in_conversation(chat)).order_by(TurnRow.id.desc())
    if up_to is not None:
        query = query.where(_ANCHOR <= up_to)
    held: list[TurnRow] = []
    below: int | None = None
    size = FIRST_PAGE
    while True:
        page_query = query if below is None else query.where(TurnRow.id < below)
        page = list((await session.execute(page_query.limit(size))).scalars())
        held += page
        if len(page) < size:  # the last page: everything is settled
            for row in sorted(held, key=conversation_order, reverse=True):
                yield row
            return
        below = page[-1].id
        # An unread row has an id below `below`, and a turn sorts at or before its id.
        ready = [row for row in held if conversation_order(row)[0] >= below]
        held = [row for row in held if conversation_order(row)[0] < below]
        for row in sorted(ready, key=conversation_order, reverse=True):
            yield row
        size = min(size * 2, LAST_PAGE)


async def last_turn(session: AsyncSession, chat: ChatRow) -> TurnRow | None:
    """The newest turn of the chat's current conversation."""
    turns = newest_turns(session, chat)
    try:
        return await anext(turns, None)
    finally:
        await turns.aclose()


async def count_turns(session: AsyncSession, chat: ChatRow) -> int:
    """How many turns the chat stores since /reset, questions that failed or were stopped
    included: counted in the chat's index alone, without reading a turn (/settings)."""
    query = select(func.count()).select_from(TurnRow).where(
        TurnRow.chat_id == chat.id, TurnRow.id >= chat.window_start
    )
    return int((await session.execute(query)).scalar_one())


def conversation_order(row: TurnRow) -> tuple[int, int]:
    """Sort key of turns as a conversation reads: a reply right after its question."""
    anchor = row.id if row.role == "user" else (row.reply_to or row.id)
    return (anchor, 0 if row.role == "user" else 1)


async def reset_conversation(session: AsyncSession, chat_id: int) -> int:
    """Start a fresh conversation: every stored turn leaves the window. Returns turns left."""
    highest = (await session.execute(select(func.max(TurnRow.id)))).scalar() or 0
    chat = await session.get(ChatRow, chat_id)
    if chat is None:
        return 0
    left = (
        await session.execute(
            select(func.count()).select_from(TurnRow).where(
                TurnRow.chat_id == chat_id, TurnRow.id >= chat.window_start
            )
        )
    ).scalar_one()
    chat.window_start = highest + 1
    chat.summary = chat.summary_upto = None
    # The conversation's documents stay stored; questions no longer draw on them.
    await session.execute(
        update(DocumentRow).where(DocumentRow.chat_id == chat_id).values(current=False))
    return int(left)


async def unfinished_questions(session: AsyncSession) -> Sequence[TurnRow]:
    """User turns accepted but never answered: a crash or restart cut them off."""
    result = await session.execute(
        select(TurnRow).where(TurnRow.role == "user", TurnRow.state == "pending").order_by(TurnRow.id)
    )
    return result.scalars().all()


async def undelivered_replies(session: AsyncSession) -> Sequence[TurnRow]:
    """Replies stored complete whose final text may not have reached the chat."""
    result = await session.execute(
        select(TurnRow)
        .where(TurnRow.role == "assistant", TurnRow.state == "complete", TurnRow.delivered.is_(False))
        .order_by(TurnRow.id)
    )
    return result.scalars().all()


async def set_turn_values(session: AsyncSession, turn_id: int, **values: object) -> None:
    await session.execute(update(TurnRow).where(TurnRow.id == turn_id).values(**values))


async def set_reply_messages(
    session: AsyncSession, reply_id: int, ids: Sequence[int], *, delivered: bool | None = None
) -> None:
    """Remember the Telegram messages a reply spans (so a restart edits them in place)."""
    values: dict[str, object] = {}
    if ids:
        values.update(message_id=ids[0], message_ids=encode_message_ids(ids))
    if delivered is not None:
        values["delivered"] = delivered
    if values:
        await set_turn_values(session, reply_id, **values)


async def set_question_reply_messages(
    session: AsyncSession, question_id: int, ids: Sequence[int]
) -> None:
    """`set_reply_messages` for the reply being written to a question."""
    reply = await reply_for(session, question_id)
    if reply is not None:
        await set_reply_messages(session, reply.id, ids)
