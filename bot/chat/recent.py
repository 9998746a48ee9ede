"""A bounded memory of values by chat: the chats used most recently keep theirs, the least
recently used are forgotten first, so a table kept by chat does not grow with every chat the
bot has ever seen."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

MOST_CHATS = 10_000
"""How many chats' values a memory keeps by default."""


class RecentChats(Generic[K, V]):
    """A mapping that keeps at most `most` keys, forgetting the least recently used first."""

    def __init__(self, most: int = MOST_CHATS) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._most = most

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __getitem__(self, key: K) -> V:
        self._items.move_to_end(key)
        return self._items[key]

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._most:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
