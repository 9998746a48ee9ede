"""Flood control of one chat: when the next Bot API call to it may go out (`FloodGate`), and the
one way every call to a chat goes out under it (`FloodGate.call`; `send_with_retries` for a
message that must arrive).

A 429 bans the whole chat for `retry_after` seconds: every reply, answer and button edit sent
there shares the chat's gate, so none of them calls during a ban another one received.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telegram.error import RetryAfter

from bot.telegram.ratelimit import retry_seconds

T = TypeVar("T")

SEND_TRIES = 3
"""How often `send_with_retries` tries: a third ban in a row is Telegram saying "not now"."""


class FloodGate:
    """When the next call to one chat may go out: spacing plus any `retry_after` ban."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last_call = float("-inf")
        self._banned_until = float("-inf")

    def ready_at(self, *, spacing: bool = True) -> float:
        if not spacing:
            return self._banned_until
        return max(self._last_call + self.interval, self._banned_until)

    async def wait(self, *, spacing: bool = True) -> None:
        """Sleep until a call may go out; `spacing=False` waits out flood bans only."""
        # A ban may grow while we sleep (another reply in the chat got a 429): check again.
        while (delay := self.ready_at(spacing=spacing) - self._clock()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)

    def called(self) -> None:
        self._last_call = self._clock()

    def banned(self, started: float, seconds: float) -> None:
        """A 429 arrived for a call started at `started`.

        If the call itself took `seconds` or longer, a rate limiter between us and Telegram
        already waited out the ban; otherwise the ban runs from now.
        """
        now = self._clock()
        until = now if now - started >= seconds else now + seconds
        self._banned_until = max(self._banned_until, until)

    async def call(
        self, make: Callable[[], Awaitable[T]], *, spacing: bool = True, counts: bool = True,
    ) -> T:
        """Make one call to the chat once the gate allows it. A 429 is recorded as the chat's
        ban and raised: the caller decides whether to try again (the gate then waits it out).

        `spacing=False`: wait out bans only; `counts=False`: the call does not delay the next
        one (a chat action, which is not a message).
        """
        await self.wait(spacing=spacing)
        started = self._clock()
        if counts:
            self.called()
        try:
            return await make()
        except RetryAfter as exc:
            self.banned(started, retry_seconds(exc))
            raise


GATE_IDLE = 600.0
"""Seconds past its last call (and any ban) after which a chat's gate has nothing to remember."""
SWEEP_PAST = 256
"""The table of gates is swept for idle ones when it grows past this (then past twice what
is left)."""


class FloodGates:
    """The gate of each chat, made when the chat is first answered. A gate that has nothing to
    remember (no ban running, its last call `GATE_IDLE` seconds past) is dropped when the table
    grows, so it holds about the chats answered lately, not every chat the bot has seen."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._gates: dict[int, FloodGate] = {}
        self._sweep_at = SWEEP_PAST

    def __len__(self) -> int:
        return len(self._gates)

    def of(self, chat_id: int, interval: float) -> FloodGate:
        """The chat's gate (`interval`: the spacing of a new one)."""
        gate = self._gates.get(chat_id)
        if gate is None:
            if len(self._gates) >= self._sweep_at:
                self._sweep()
            gate = self._gates[chat_id] = FloodGate(interval, self._clock)
        return gate

    def _sweep(self) -> None:
        idle_before = self._clock() - GATE_IDLE
        for chat_id in [c for c, gate in self._gates.items() if gate.ready_at() < idle_before]:
            del self._gates[chat_id]
        self._sweep_at = max(SWEEP_PAST, 2 * len(self._gates))


async def send_with_retries(gate: FloodGate, make: Callable[[], Awaitable[T]]) -> T:
    """One message that must arrive (not a stream's edit): sent as soon as no ban holds the
    chat, and again after each ban, at most `SEND_TRIES` times; the last ban is raised."""
    for attempt in range(SEND_TRIES):
        try:
            return await gate.call(make, spacing=False)
        except RetryAfter:
            if attempt == SEND_TRIES - 1:
                raise
    raise AssertionError("unreachable")
