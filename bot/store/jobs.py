"""Async functions over the `/quantize` job table; each takes the session it works in and
commits nothing. Callers decide transaction boundaries."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.schema import QuantizeJobRow, utcnow


async def add_quantize_job(
    session: AsyncSession, *, requested_by: int | None, chat_id: int | None, source: str,
    target: str, qtype: str,
) -> QuantizeJobRow:
    """A new job in state `running` (flushed, so it has its id)."""
    row = QuantizeJobRow(
        requested_by=requested_by, chat_id=chat_id, source=source, target=target, qtype=qtype,
        state="running",
    )
    session.add(row)
    await session.flush()
    return row


async def finish_quantize_job(session: AsyncSession, job_id: int, **values: object) -> None:
    """Record how a job ended (`state`, and `error` or the sizes and time), stamped now."""
    await session.execute(
        update(QuantizeJobRow).where(QuantizeJobRow.id == job_id)
        .values(finished_at=utcnow(), **values)
    )


async def interrupt_running_jobs(session: AsyncSession, *, reason: str) -> list[QuantizeJobRow]:
    """Mark every job still `running` as `interrupted` with `reason`, and return them."""
    rows = list((await session.execute(
        select(QuantizeJobRow).where(QuantizeJobRow.state == "running").order_by(QuantizeJobRow.id)
    )).scalars())
    for row in rows:
        row.state, row.error, row.finished_at = "interrupted", reason, utcnow()
    return rows
