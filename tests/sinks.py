"""A reply sink for tests of the chat service: keeps what it was shown."""

from __future__ import annotations

from collections.abc import Sequence


class RecordingSink:
    def __init__(self) -> None:
        self.updates: list[str] = []
        self.places: list[int] = []
        self.stalled = 0
        self.final: str | None = None
        self.note: str | None = None
        self.actions: tuple[str, ...] = ()
        self.completed = 0

    async def waiting(self, ahead: int, *, stalled: bool = False) -> None:
        self.places.append(ahead)
        self.stalled += stalled

    async def update(self, text: str, *, complete: bool = False) -> None:
        self.updates.append(text)
        self.completed += complete

    async def finish(
        self, text: str, note: str | None = None, *, actions: Sequence[str] = ()
    ) -> Sequence[int]:
        self.final, self.note, self.actions = text, note, tuple(actions)
        return []

    async def fail(self, message: str) -> None:
        self.final = message
