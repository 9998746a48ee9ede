"""Which chat holds which slot of which server: pure bookkeeping for the remote engine.

A chat keeps its slot between replies, so the server's cache of that slot still holds its
conversation and a follow-up evaluates only its new tokens. A chat without a slot gets a free
one on the server with the most free slots for its weight; when no slot is free, the chat that
used its slot least recently gives it up (its cache is saved to the server's disk first, where
the server allows). A server that goes down loses its chats; they are placed again elsewhere.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Claim:
    """A slot given to a chat's request. `evicted`: the chat that held it before (its cache is
    still in the slot); `kept`: the slot already held this chat's own conversation."""

    backend: int
    slot: int
    evicted: str | None = None
    kept: bool = False


@dataclass
class _Slot:
    owner: str | None = None
    busy: bool = False
    used: int = -1


@dataclass
class _Server:
    weight: float
    up: bool = False
    slots: list[_Slot] = field(default_factory=list)

    def free(self) -> int:
        return sum(1 for slot in self.slots if slot.owner is None and not slot.busy)


class Placement:
    """Slots of the servers and the chats that hold them."""

    def __init__(self) -> None:
        self._servers: dict[int, _Server] = {}
        self._home: dict[str, tuple[int, int]] = {}
        self._clock = itertools.count()

    def add_server(self, index: int, *, weight: float) -> None:
        self._servers[index] = _Server(weight=weight)

    def server_up(self, index: int, *, slots: int) -> None:
        """A server answers, with `slots` slots (its chats from before it went down are gone)."""
        server = self._servers[index]
        server.up = True
        if len(server.slots) != slots:
            for number, slot in enumerate(server.slots):
                if slot.owner is not None and number >= slots:
                    self._home.pop(slot.owner, None)
            server.slots = server.slots[:slots] + [_Slot() for _ in range(slots - len(server.slots))]

    def server_down(self, index: int) -> list[str]:
        """A server stopped answering: its chats lose their slots (returned)."""
        server = self._servers[index]
        server.up = False
        lost = []
        for slot in server.slots:
            if slot.owner is not None:
                self._home.pop(slot.owner, None)
                lost.append(slot.owner)
            slot.owner = None
            slot.busy = False
        return lost

    def any_up(self) -> bool:
        return any(server.up for server in self._servers.values())

    def can_start(self) -> bool:
        """Some slot of a server that is up is not writing a reply."""
        return any(
            not slot.busy for server in self._servers.values() if server.up for slot in server.slots
        )

    def home(self, chat_key: str) -> tuple[int, int] | None:
        return self._home.get(chat_key)

    def take(self, chat_key: str, *, prefer: int | None = None) -> Claim | None:
        """A slot for the chat's next reply, or None while every slot is busy.

        The chat's own slot if it has one; else a free slot (on `prefer` if it has one: the
        server holding the chat's saved cache), on the server with the most free slots times
        its weight; else the idle slot used least recently, whose chat gives it up."""
        home = self._home.get(chat_key)
        if home is not None:
            slot = self._servers[home[0]].slots[home[1]]
            if slot.busy:
                return None
            self._occupy(home, chat_key)
            return Claim(home[0], home[1], kept=True)
        up = {index: server for index, server in self._servers.items() if server.up}
        if prefer in up and up[prefer].free():
            candidates = {prefer: up[prefer]}
        else:
            candidates = {index: server for index, server in up.items() if server.free()}
        if candidates:
            index = max(candidates, key=lambda i: (candidates[i].free() * candidates[i].weight, -i))
            number = next(n for n, slot in enumerate(up[index].slots)
                          if slot.owner is None and not slot.busy)
            self._occupy((index, number), chat_key)
            return Claim(index, number)
        idle = [
            (slot.used, index, number)
            for index, server in up.items() for number, slot in enumerate(server.slots)
            if not slot.busy
        ]
        if not idle:
            return None
        _, index, number = min(idle)
        evicted = self._servers[index].slots[number].owner
        if evicted is not None:
            self._home.pop(evicted, None)
        self._occupy((index, number), chat_key)
        return Claim(index, number, evicted=evicted)

    def release(self, chat_key: str) -> None:
        """The chat's reply ended: its slot is idle and keeps the chat's cache."""
        home = self._home.get(chat_key)
        if home is not None:
            slot = self._servers[home[0]].slots[home[1]]
            slot.busy = False
            slot.used = next(self._clock)

    def give_up(self, chat_key: str) -> None:
        """The chat's slot no longer holds its conversation (a failed reply): free it."""
        home = self._home.pop(chat_key, None)
        if home is not None:
            slot = self._servers[home[0]].slots[home[1]]
            slot.owner, slot.busy = None, False

    def slots(self) -> list[tuple[int, int, str | None, bool]]:
        """(server, slot, chat holding it, busy) for every slot of every server that is up."""
        return [
            (index, number, slot.owner, slot.busy)
            for index, server in self._servers.items() if server.up
            for number, slot in enumerate(server.slots)
        ]

    def _occupy(self, where: tuple[int, int], chat_key: str) -> None:
        slot = self._servers[where[0]].slots[where[1]]
        slot.owner, slot.busy, slot.used = chat_key, True, next(self._clock)
        self._home[chat_key] = where
