"""Fair use, front-end neutral: each question judged against its asker's limits and its chat's
backlog (`bot.access.fair_use`) with the figures the store keeps, the one line a refusal is
answered with, and /usage and /stats."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.access.fair_use import FairUse, Limits, Refusal, seconds_to_midnight
from bot.chat.access import label
from bot.i18n import _, _n
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store import usage as store

KEPT_DAYS = 30
"""Days of figures kept (/stats shows 7)."""
TOP = 5
"""Users and chats /stats lists per period."""


@dataclass(frozen=True)
class Refused:
    """A question refused: why, and the one line to answer it with (None: the person was
    told already, so it is not answered)."""

    refusal: Refusal
    text: str | None


def wait_text(seconds: float) -> str:
    """A wait, rounded up, in the largest unit that reads well: "40 seconds", "3 minutes",
    "5 h 12 min"."""
    if seconds < 60:
        n = max(1, math.ceil(seconds))
        return _n("{n} second", "{n} seconds", n)
    if seconds < 3600:
        n = math.ceil(seconds / 60)
        return _n("{n} minute", "{n} minutes", n)
    minutes = math.ceil(seconds / 60)
    return _("{hours} h {minutes} min", hours=minutes // 60, minutes=minutes % 60)


def _amounts(figures: store.Figures) -> dict[str, str]:
    return {
        "questions": _n("{n} question", "{n} questions", figures.questions),
        "tokens": _n("{n} token", "{n} tokens", figures.tokens),
    }


class Usage:
    """The fair-use limits over the store's figures, and the figures themselves."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = Limits(
            per_minute=settings.user_messages_per_minute,
            tokens_per_day=settings.user_tokens_per_day, chat_waiting=settings.chat_waiting_max,
        )
        self._fair = FairUse(self.limits)
        self._sessions = sessions
        self._metrics = metrics or Metrics()
        self._clock = clock

    async def judge(self, *, user_id: int, chat_id: int) -> Refused | None:
        """Admit a question of `user_id` in the Telegram chat `chat_id` (None), or refuse it:
        counted (metrics, and the person's refused figure) and, the first time, answered."""
        now = datetime.now(UTC)
        tokens = waiting = 0
        if self.limits.tokens_per_day or self.limits.chat_waiting:
            async with self._sessions() as session:
                if self.limits.tokens_per_day:
                    tokens = await store.tokens_on(session, user_id, store.today(now))
                if self.limits.chat_waiting:
                    waiting = await store.waiting(session, chat_id)
        refusal = self._fair.judge(
            user=user_id, chat=chat_id, now=self._clock(), tokens_today=tokens, waiting=waiting,
            day_left=seconds_to_midnight(now),
        )
        if refusal is None:
            return None
        self._metrics.message_refused(refusal.reason)
        async with self._sessions() as session:
            await store.add(session, user_id=user_id, chat_id=chat_id, refused=1)
            await session.commit()
        return Refused(refusal, self.refusal_text(refusal) if refusal.tell else None)

    def refusal_text(self, refusal: Refusal) -> str:
        """The one line a refused question is answered with, in the current language."""
        wait = wait_text(refusal.retry_in or 0.0)
        if refusal.reason == "rate":
            return _n("⏳ At most {n} question a minute, please: ask again in {wait}.",
                      "⏳ At most {n} questions a minute, please: ask again in {wait}.",
                      self.limits.per_minute, wait=wait)
        if refusal.reason == "tokens":
            return _("⏳ You have used today's {budget} tokens: ask again in {wait} (the "
                     "budget starts again at 00:00 UTC).", budget=self.limits.tokens_per_day,
                     wait=wait)
        return _n("⏳ {n} question is already waiting in this chat: ask again once it is "
                  "answered.",
                  "⏳ {n} questions are already waiting in this chat: ask again once one is "
                  "answered.", self.limits.chat_waiting)

    # -- the figures ------------------------------------------------------------------------

    async def mine(self, user_id: int, *, admin: bool) -> str:
        """/usage: a person's questions and tokens today and in 7 days, and their limits."""
        async with self._sessions() as session:
            today = await store.figures_of(session, user_id, since=store.days_ago(1))
            week = await store.figures_of(session, user_id, since=store.days_ago(7))
        lines = [
            _("Your use of the bot (id {id}):", id=user_id),
            _("Today: {questions}, {tokens}.", **_amounts(today)),
            _("Last 7 days: {questions}, {tokens}.", **_amounts(week)),
        ]
        if week.refused:
            lines.append(_n("{n} message was refused by the limits in 7 days.",
                            "{n} messages were refused by the limits in 7 days.", week.refused))
        lines.append(self._limits_text(admin))
        return "\n".join(lines)

    def _limits_text(self, admin: bool) -> str:
        if admin:
            return _("Your limits: none (you are one of the bot's admins).")
        limits = self.limits
        none = _("no limit")
        rate = str(limits.per_minute) if limits.per_minute else none
        tokens = str(limits.tokens_per_day) if limits.tokens_per_day else none
        return _("Your limits: questions a minute: {rate}; tokens a day: {tokens}.",
                 rate=rate, tokens=tokens)

    async def stats(self) -> str:
        """/stats: the top users and chats by tokens, questions and refused messages, today
        and in the last 7 days."""
        sections = []
        async with self._sessions() as session:
            for heading, days in ((_("Today (UTC):"), 1), (_("Last 7 days:"), 7)):
                since = store.days_ago(days)
                users = await store.top(session, "user", since=since, limit=TOP)
                chats = await store.top(session, "chat", since=since, limit=TOP)
                named = await store.names(session, {f.id for f in users + chats})
                lines = [heading]
                if not users:
                    lines.append(_("no questions yet."))
                else:
                    lines.append(_("Top users:"))
                    lines += [self._line(f, named) for f in users]
                    lines.append(_("Top chats:"))
                    lines += [self._line(f, named) for f in chats]
                sections.append("\n".join(lines))
        return "\n\n".join(sections)

    @staticmethod
    def _line(figures: store.Figures, named: dict[int, str]) -> str:
        who = label(figures.id, named.get(figures.id)) if figures.id else _("the console")
        return _("{who}: {tokens}, {questions}, {refused} refused", who=who,
                 refused=figures.refused, **_amounts(figures))

    async def prune(self) -> None:
        """Forget the figures older than KEPT_DAYS."""
        async with self._sessions() as session:
            await store.prune(session, before=store.days_ago(KEPT_DAYS))
            await session.commit()
