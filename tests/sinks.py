"""A reply sink for tests of the chat service: keeps what it was shown; and `ask`, a question
stored and answered into one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.chat import ChatService, ReplyOutcome
    from bot.core.chats import ChatRef


class RecordingSink:
    def __init__(self) -> None:
        self.updates: list[str] = []
        self.places: list[int] = []
        self.stalled = 0
        self.final: str | None = None
        self.note: str | None = None
        self.actions: tuple[str, ...] = ()
        self.completed = 0
        self.thoughts: list[tuple[str | None, float]] = []
        """What it was told of a thinking model's thinking: (the text shown or None, seconds)."""
        self.final_thinking: str | None = None

    async def waiting(self, ahead: int, *, stalled: bool = False) -> None:
        self.places.append(ahead)
        self.stalled += stalled

    async def update(self, text: str, *, complete: bool = False) -> None:
        self.updates.append(text)
        self.completed += complete

    async def thinking(self, text: str | None, seconds: float) -> None:
        self.thoughts.append((text, seconds))

    async def finish(
        self, text: str, note: str | None = None, *, actions: Sequence[str] = (),
        thinking: str | None = None,
    ) -> Sequence[int]:
        self.final, self.note, self.actions = text, note, tuple(actions)
        self.final_thinking = thinking
        return []

    async def fail(self, message: str) -> None:
        self.final = message


async def ask(
    service: ChatService, ref: ChatRef, text: str, sink: RecordingSink | None = None
) -> ReplyOutcome | None:
    """Store `text` as a question of `ref` and write its reply into `sink` (a new one if None)."""
    accepted = await service.conversation.accept(ref, text)
    return await service.conversation.write_reply(accepted, sink or RecordingSink())
