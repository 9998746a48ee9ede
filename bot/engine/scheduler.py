"""Who starts next: requests wait per chat and chats take turns, one running request per chat.

Pure bookkeeping, no llama.cpp: the worker pool asks `pop()` for the next request whenever a
slot is free. Among the chats with a request waiting and none running, the one that started a
request longest ago goes first (a chat that has not started anything recently goes before all
that have), so a chat that sends five messages in a row cannot hold back another chat's one
message: chats are served round-robin, not messages first-in first-out.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)

NEVER = -1
"""The turn stamp of a chat that has no recent start: it goes before every chat that has."""


@dataclass
class _ChatQueue(Generic[T]):
    items: deque[tuple[int, T]] = field(default_factory=deque)
    """(arrival number, item), oldest first."""


class FairQueue(Generic[T]):
    """Waiting requests grouped by chat, handed out round-robin between chats."""

    def __init__(self) -> None:
        self._chats: dict[str, _ChatQueue[T]] = {}
        self._chat_of: dict[T, str] = {}
        self._running: Counter[str] = Counter()
        self._started: dict[str, int] = {}
        self._arrivals = itertools.count()
        self._turns = itertools.count()

    def __len__(self) -> int:
        return len(self._chat_of)

    def __contains__(self, item: object) -> bool:
        return item in self._chat_of

    def push(self, chat_key: str, item: T) -> None:
        """Add a waiting request of `chat_key`."""
        if item in self._chat_of:
            raise ValueError("this request is already waiting")
        self._chats.setdefault(chat_key, _ChatQueue()).items.append((next(self._arrivals), item))
        self._chat_of[item] = chat_key

    def remove(self, item: T) -> bool:
        """Take a waiting request out (it was cancelled); False if it was not waiting."""
        chat_key = self._chat_of.pop(item, None)
        if chat_key is None:
            return False
        queue = self._chats[chat_key]
        queue.items = deque(entry for entry in queue.items if entry[1] != item)
        if not queue.items:
            del self._chats[chat_key]
        self._forget_if_quiet(chat_key)
        return True

    def pop(self) -> tuple[str, T] | None:
        """Start the next request: (chat, item), or None if no chat may start one now."""
        chat_key = self._pick(self._started)
        if chat_key is None:
            return None
        queue = self._chats[chat_key]
        _, item = queue.items.popleft()
        if not queue.items:
            del self._chats[chat_key]
        del self._chat_of[item]
        self._running[chat_key] += 1
        self._started[chat_key] = next(self._turns)
        return chat_key, item

    def done(self, chat_key: str) -> None:
        """A request that `pop()` returned has finished."""
        self._running[chat_key] -= 1
        if self._running[chat_key] <= 0:
            del self._running[chat_key]
        self._forget_if_quiet(chat_key)

    def running(self, chat_key: str) -> bool:
        return self._running[chat_key] > 0

    def order(self) -> list[T]:
        """The waiting requests in the order they would start if nothing else arrived.

        A chat's running request is assumed to finish before its next one is due, so the
        simulation only applies the round-robin rule.
        """
        queues = {key: deque(queue.items) for key, queue in self._chats.items()}
        started = dict(self._started)
        result: list[T] = []
        for turn in itertools.count(1 << 62):  # later than every real turn
            if not queues:
                break
            chat_key = min(queues, key=lambda key: (started.get(key, NEVER), queues[key][0][0]))
            result.append(queues[chat_key].popleft()[1])
            started[chat_key] = turn
            if not queues[chat_key]:
                del queues[chat_key]
        return result

    def _pick(self, started: dict[str, int]) -> str | None:
        eligible = [key for key in self._chats if not self._running[key]]
        if not eligible:
            return None
        return min(eligible, key=lambda key: (started.get(key, NEVER), self._chats[key].items[0][0]))

    def _forget_if_quiet(self, chat_key: str) -> None:
        # A chat with nothing waiting and nothing running loses its turn stamp: when it comes
        # back it has not been served recently, so it goes first.
        if chat_key not in self._chats and not self._running[chat_key]:
            self._started.pop(chat_key, None)
            self._running.pop(chat_key, None)
