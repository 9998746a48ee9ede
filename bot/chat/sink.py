"""The reply sink: where a reply goes while it is written (a Telegram message, a terminal)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol

from bot.i18n import N_, _

MessageRecorder = Callable[[Sequence[int]], Awaitable[None]]
"""Stores the message ids a reply spans so far; a front end hands one to the sink it builds
(`Conversation.recorder`), so a reply cut off by a crash is edited in place after a restart."""

STOP_NOTES: dict[str, str | None] = {
    "cancelled": N_("⏹ stopped"),
    "length": None,
    "context": N_("(the context window is full: /reset starts a fresh conversation)"),
}
"""The note shown under a reply that ended for this reason (none: it simply ended), in
English: `stop_note` gives it in the current language."""

EMPTY_NOTE = N_("(the model gave an empty answer)")
"""In English; shown translated (`_(EMPTY_NOTE)`)."""

STALLED_NOTE = N_(
    "The model servers cannot be reached right now. Your message is kept and will be answered "
    "as soon as one is back (/stop cancels it)."
)
"""Shown while a reply waits for a remote engine's servers to come back (translated where
shown: `_(STALLED_NOTE)`)."""


def stop_note(reason: str) -> str | None:
    """The note under a reply that ended for `reason`, in the current language."""
    note = STOP_NOTES.get(reason)
    return _(note) if note else None

ReplyAction = Literal["regenerate", "continue"]
"""What a finished reply offers (Telegram: its buttons): a new sample in its place, or more of
it."""


def shown_text(text: str, note: str | None) -> str:
    """A finished reply as a message shows it: the text with its note below, in italics
    (Markdown), or the note alone. The note is shown in the current language (a note given
    already translated stays as it is)."""
    final = text.strip()
    if note:
        note = _(note)
        final = f"{final}\n\n_{note}_" if final else note
    return final or "…"


def actions_after(text: str, reason: str) -> tuple[ReplyAction, ...]:
    """A finished reply can always be written anew; one cut off at /n can be continued."""
    if reason == "length" and text.strip():
        return ("regenerate", "continue")
    return ("regenerate",)


class ReplySink(Protocol):
    """Shows one reply as it is written. Every method but `finish` must return quickly."""

    async def waiting(self, ahead: int, *, stalled: bool = False) -> None:
        """The reply has not started: `ahead` requests go first; `stalled`: no model server
        can be reached, the reply waits for one (`STALLED_NOTE`)."""
        ...

    async def update(self, text: str, *, complete: bool = False) -> None:
        """The reply so far (the whole text, not a delta). `complete`: this is all of it;
        `finish` follows as soon as it is stored."""
        ...

    async def thinking(self, text: str | None, seconds: float) -> None:
        """A thinking model is thinking, for `seconds` so far. `text`: its thinking so far, to
        show with the reply (the chat's /reasoning is `show`); None: show only that it thinks
        (the thinking stays out of the reply)."""
        ...

    async def finish(
        self, text: str, note: str | None = None, *, actions: Sequence[ReplyAction] = (),
        thinking: str | None = None,
    ) -> Sequence[int]:
        """Show the final text (and a note such as "stopped", already in the current language)
        with what may be done with it next, and the model's `thinking` above it where given;
        return the message ids used."""
        ...

    async def fail(self, message: str) -> None:
        """The reply could not be produced; tell the user (`message` is in the current
        language)."""
        ...
