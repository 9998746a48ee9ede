"""The access rules: who is served, and what a message from anyone else gets (one short answer
at most once an hour; in `pairing` mode, the first one also asks the bot's admins)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AccessMode = Literal["pairing", "allowlist", "open"]
Reason = Literal["access", "rate", "tokens", "backlog", "busy"]
"""Why a message was refused: not allowed, too many questions a minute, the day's tokens used,
too many questions waiting in the chat, the model's queue full."""
REASONS: tuple[Reason, ...] = ("access", "rate", "tokens", "backlog", "busy")

Decision = Literal["allowed", "denied"]
"""What an admin (or the upgrade) decided about an id; None where nobody did."""
OnAdded = Literal["serve", "allow", "ask", "leave"]
"""The bot was added to a group: serve it as any chat (open), allow it (added by someone
allowed), ask the admins, or leave (allowlist)."""

HOLD_OFF = 3600.0
"""Seconds between two answers to the same stranger."""
GROUP_WAIT = 24 * 3600.0
"""Seconds the bot stays in a group nobody approved."""
REQUEST_DAYS = 30
"""Days a request (id, name, time, preview) is kept."""
PREVIEW_CHARS = 200
"""How much of a stranger's first message the admins' notice quotes."""


@dataclass(frozen=True)
class StrangerAnswer:
    """What a message from someone not allowed gets: the one short answer now, and whether a
    request is recorded and the admins are asked."""

    answer: bool
    request: bool


@dataclass(frozen=True, kw_only=True)
class Rules:
    """The configured part of the policy: the mode, the bot's admins and the ids always
    allowed (config `allow`)."""

    mode: AccessMode
    admins: frozenset[int] = frozenset()
    always: frozenset[int] = frozenset()

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admins

    def configured(self, some_id: int) -> bool:
        """Allowed by the configuration itself (an admin or an id of `allow`)."""
        return some_id in self.admins or some_id in self.always

    def allows(self, some_id: int, decision: Decision | None) -> bool:
        """Whether a user (private chat) or a group is served, given what was decided about it."""
        return self.mode == "open" or self.configured(some_id) or decision == "allowed"

    def on_stranger(
        self, *, decision: Decision | None, pending: bool, last_answer: float | None, now: float
    ) -> StrangerAnswer:
        """A message from a person not allowed. In `pairing`, someone nobody decided about and
        without a request is asked about (and answered at once); otherwise the short answer
        comes at most once per HOLD_OFF."""
        request = self.mode == "pairing" and decision is None and not pending
        answer = request or last_answer is None or now - last_answer >= HOLD_OFF
        return StrangerAnswer(answer=answer, request=request)

    def on_added(self, *, by: int | None, by_decision: Decision | None) -> OnAdded:
        """The bot was added to a group by `by` (Telegram's `from`)."""
        if self.mode == "open":
            return "serve"
        if by is not None and self.allows(by, by_decision):
            return "allow"
        return "ask" if self.mode == "pairing" else "leave"


class HoldOff:
    """When each stranger last got the short answer. Kept in memory only: nothing of a
    stranger is stored for it, and a restart at worst lets one more answer through."""

    def __init__(self, period: float = HOLD_OFF) -> None:
        self._period = period
        self._last: dict[int, float] = {}

    def last(self, key: int) -> float | None:
        return self._last.get(key)

    def mark(self, key: int, now: float) -> None:
        self._last[key] = now
        if len(self._last) > 1000:  # forget those whose hour is over
            self._last = {k: t for k, t in self._last.items() if now - t < self._period}
