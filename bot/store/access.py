"""Who may use the bot, as stored: decisions about users and groups, and the requests of those
not allowed yet. Each function takes the session it works in and commits nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.access.policy import Decision
from bot.store.schema import AccessRequestRow, AccessRow, utcnow


def kind_of(some_id: int) -> str:
    """"user" for a user's id (their private chat's), "chat" for a group's (negative)."""
    return "user" if some_id > 0 else "chat"


async def decision(session: AsyncSession, some_id: int) -> Decision | None:
    """What was decided about a user or a group (None: nothing)."""
    row = await session.get(AccessRow, some_id)
    if row is None:
        return None
    return "allowed" if row.allowed else "denied"


async def decide(
    session: AsyncSession, some_id: int, *, allowed: bool, name: str | None = None,
    by: int | None = None,
) -> None:
    """Allow or deny a user or a group; a request of theirs is done with."""
    row = await session.get(AccessRow, some_id)
    if row is None:
        row = AccessRow(id=some_id, kind=kind_of(some_id), allowed=allowed)
        session.add(row)
    row.allowed, row.decided_by, row.decided_at = allowed, by, utcnow()
    if name:
        row.name = name
    await session.execute(delete(AccessRequestRow).where(AccessRequestRow.id == some_id))


async def decisions(session: AsyncSession) -> Sequence[AccessRow]:
    """Every decision: users first, then groups, each by id."""
    rows = (await session.execute(select(AccessRow))).scalars().all()
    return sorted(rows, key=lambda row: (row.kind != "user", abs(row.id)))


@dataclass(frozen=True)
class NewRequest:
    """What is kept of someone who is not allowed (for 30 days)."""

    id: int
    name: str | None
    username: str | None = None
    language: str | None = None
    preview: str | None = None
    added_by: int | None = None
    added_by_name: str | None = None


async def request(session: AsyncSession, some_id: int) -> AccessRequestRow | None:
    return await session.get(AccessRequestRow, some_id)


async def add_request(session: AsyncSession, new: NewRequest) -> AccessRequestRow:
    row = AccessRequestRow(
        id=new.id, kind=kind_of(new.id), name=new.name, username=new.username,
        language=new.language, preview=new.preview, added_by=new.added_by,
        added_by_name=new.added_by_name, created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return row


async def drop_request(session: AsyncSession, some_id: int) -> None:
    await session.execute(delete(AccessRequestRow).where(AccessRequestRow.id == some_id))


async def requests(
    session: AsyncSession, *, kind: str | None = None, before: datetime | None = None
) -> Sequence[AccessRequestRow]:
    """Pending requests, oldest first: of one kind, made before a moment."""
    query = select(AccessRequestRow).order_by(AccessRequestRow.created_at, AccessRequestRow.id)
    if kind is not None:
        query = query.where(AccessRequestRow.kind == kind)
    if before is not None:
        query = query.where(AccessRequestRow.created_at < before)
    return (await session.execute(query)).scalars().all()


async def prune_requests(session: AsyncSession, *, before: datetime) -> int:
    """Delete requests made before `before`; returns how many."""
    old = await requests(session, before=before)
    for row in old:
        await session.delete(row)
    return len(old)
