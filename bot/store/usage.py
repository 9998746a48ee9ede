"""Each person's use of the bot per chat and UTC day: questions answered, tokens generated for
them, messages refused by the fair-use limits. Each function takes the session it works in and
commits nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.schema import AccessRow, ChatRow, TurnRow, UsageRow

NOBODY = 0
"""The user id of a question nobody is known to have asked (the console, a channel's post)."""


def today(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(UTC).date()


async def add(
    session: AsyncSession, *, user_id: int | None, chat_id: int, day: date | None = None,
    questions: int = 0, tokens: int = 0, refused: int = 0,
) -> None:
    """Add to one person's figures in one chat on one day (today by default)."""
    key = {"day": day or today(), "user_id": user_id or NOBODY, "chat_id": chat_id}
    added = {"questions": questions, "tokens": tokens, "refused": refused}
    bind = session.get_bind()
    dialect = postgresql if bind.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(UsageRow).values(**key, **added)
    table = UsageRow.__table__
    await session.execute(insert.on_conflict_do_update(
        index_elements=list(key),
        set_={name: table.c[name] + insert.excluded[name] for name in added},
    ))


async def count_reply(
    session: AsyncSession, reply: TurnRow, *, n_tokens: int, continued: bool = False
) -> None:
    """A reply is about to be stored finished with `n_tokens` (call before its row changes):
    its asker's figures in its chat (a topic's group) grow by the tokens generated now, and by
    one question unless the reply was written before (Regenerate, Continue: `continued`, whose
    count includes the tokens continued)."""
    again = reply.state == "complete"
    generated = n_tokens - (reply.n_tokens or 0) if again and continued else n_tokens
    row = (await session.execute(
        select(TurnRow.user_id, ChatRow.id, ChatRow.parent_id)
        .join(ChatRow, ChatRow.id == TurnRow.chat_id)
        .where(TurnRow.id == reply.reply_to)
    )).one_or_none()
    if row is None:
        return
    user_id, chat_id, parent_id = row
    await add(session, user_id=user_id, chat_id=parent_id if parent_id is not None else chat_id,
              questions=0 if again else 1, tokens=max(0, generated))


async def tokens_on(session: AsyncSession, user_id: int, day: date) -> int:
    """Tokens generated for a person on a day, in every chat."""
    total = await session.scalar(
        select(func.coalesce(func.sum(UsageRow.tokens), 0))
        .where(UsageRow.user_id == user_id, UsageRow.day == day)
    )
    return int(total or 0)


@dataclass(frozen=True)
class Figures:
    """Questions, tokens and refused messages of someone (or some chat) over some days."""

    id: int
    questions: int
    tokens: int
    refused: int


async def figures_of(session: AsyncSession, user_id: int, *, since: date) -> Figures:
    questions, tokens, refused = (await session.execute(
        select(func.coalesce(func.sum(UsageRow.questions), 0),
               func.coalesce(func.sum(UsageRow.tokens), 0),
               func.coalesce(func.sum(UsageRow.refused), 0))
        .where(UsageRow.user_id == user_id, UsageRow.day >= since)
    )).one()
    return Figures(user_id, int(questions), int(tokens), int(refused))


async def top(session: AsyncSession, by: str, *, since: date, limit: int = 5) -> list[Figures]:
    """The users (`by="user"`) or chats (`by="chat"`) that used the most since `since`: by
    tokens, then questions, then refused messages."""
    column = UsageRow.user_id if by == "user" else UsageRow.chat_id
    questions = func.sum(UsageRow.questions)
    tokens = func.sum(UsageRow.tokens)
    refused = func.sum(UsageRow.refused)
    rows = (await session.execute(
        select(column, questions, tokens, refused).where(UsageRow.day >= since)
        .group_by(column).order_by(tokens.desc(), questions.desc(), refused.desc(), column)
        .limit(limit)
    )).all()
    return [Figures(int(i), int(q), int(t), int(r)) for i, q, t, r in rows]


async def names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    """What to call users and chats: a decision's name, a chat's title, a speaker's name."""
    if not ids:
        return {}
    found: dict[int, str] = {}
    for some_id, name in (await session.execute(
        select(TurnRow.user_id, func.max(TurnRow.speaker))
        .where(TurnRow.user_id.in_(ids), TurnRow.speaker.is_not(None)).group_by(TurnRow.user_id)
    )).all():
        found[some_id] = name
    for some_id, title in (await session.execute(
        select(ChatRow.id, ChatRow.title).where(ChatRow.id.in_(ids), ChatRow.title.is_not(None))
    )).all():
        found[some_id] = title
    for some_id, name in (await session.execute(
        select(AccessRow.id, AccessRow.name).where(AccessRow.id.in_(ids),
                                                   AccessRow.name.is_not(None))
    )).all():
        found[some_id] = name
    return found


async def waiting(session: AsyncSession, chat_id: int) -> int:
    """Questions of a Telegram chat (all its forum topics together) not answered yet."""
    topics = select(ChatRow.id).where(ChatRow.parent_id == chat_id)
    count = await session.scalar(
        select(func.count(TurnRow.id)).where(
            TurnRow.role == "user", TurnRow.state == "pending",
            (TurnRow.chat_id == chat_id) | TurnRow.chat_id.in_(topics),
        )
    )
    return int(count or 0)


async def prune(session: AsyncSession, *, before: date) -> None:
    await session.execute(delete(UsageRow).where(UsageRow.day < before))


def days_ago(days: int, now: datetime | None = None) -> date:
    """The first day of the last `days` days (1: today)."""
    return today(now) - timedelta(days=days - 1)

