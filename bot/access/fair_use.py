"""Fair use: how many questions a person may ask a minute and how many tokens a day, and how
many questions may wait in one chat; the first refusal of a run is answered, the rest are not."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.access.policy import Reason

WINDOW = 60.0
"""The rate limit's window, in seconds."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The configured limits; 0 means none."""

    per_minute: int = 0
    tokens_per_day: int = 0
    chat_waiting: int = 0


@dataclass(frozen=True)
class Refusal:
    """A question refused: why, in how many seconds they may ask again (None: once a waiting
    question is answered), and whether this one is answered (the first of a run)."""

    reason: Reason
    retry_in: float | None
    tell: bool


def seconds_to_midnight(now: datetime) -> float:
    """Seconds until the next UTC day, when the daily token budgets start again."""
    now = now.astimezone(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


class FairUse:
    """The per-person rate windows and who was already told, in memory. The token and backlog
    figures come from the caller (the store)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._asked: dict[int, deque[float]] = {}
        self._told: dict[int, set[tuple[Reason, int]]] = {}

    def judge(
        self, *, user: int, chat: int, now: float, tokens_today: int = 0, waiting: int = 0,
        day_left: float = 0.0,
    ) -> Refusal | None:
        """Admit a question of `user` in `chat` (None: it counts against their minute from now)
        or refuse it. `waiting`: questions of the chat not answered yet; `now`: monotonic."""
        limits = self.limits
        if limits.chat_waiting and waiting >= limits.chat_waiting:
            return self._refuse(user, chat, "backlog", None)
        asked = self._asked.setdefault(user, deque())
        while asked and now - asked[0] >= WINDOW:
            asked.popleft()
        if limits.per_minute and len(asked) >= limits.per_minute:
            return self._refuse(user, chat, "rate", asked[0] + WINDOW - now)
        if limits.tokens_per_day and tokens_today >= limits.tokens_per_day:
            return self._refuse(user, chat, "tokens", day_left)
        asked.append(now)
        self._told.pop(user, None)
        self._forget_idle(now)
        return None

    def _refuse(self, user: int, chat: int, reason: Reason, retry_in: float | None) -> Refusal:
        told = self._told.setdefault(user, set())
        first = (reason, chat) not in told
        told.add((reason, chat))
        return Refusal(reason, retry_in, first)

    def _forget_idle(self, now: float) -> None:
        if len(self._asked) > 1000:
            self._asked = {u: q for u, q in self._asked.items() if q and now - q[-1] < WINDOW}
