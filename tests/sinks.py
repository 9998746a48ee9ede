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

    async def waiting(self, ahead: int, *, stalled: bool = False) -> None:
        self.places.append(ahead)
        self.stalled += stalled

    async def update(self, text: str) -> None:
        self.updates.append(text)

    async def finish(self, text: str, note: str | None = None) -> Sequence[int]:
        self.final, self.note = text, note
        return []

    async def fail(self, message: str) -> None:
        self.final = message
