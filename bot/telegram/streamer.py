"""Streaming a reply into Telegram: a live draft or one message edited as the model writes,
split past 4096, with the reply's buttons.

The first text goes out as soon as there is some (held for a moment only, so a reply written
at once is sent whole); after that at most one API call per interval per reply (1 s in private
chats, 3 s in groups). The typing action until the first words arrive is not a message and
holds nothing back. Flood control is honoured exactly: after a 429 nothing is sent to the chat
before `retry_after` has passed, intermediate texts are dropped (the next call carries the
newest text) and the final text is always delivered. HTML that Telegram rejects is sent again
as plain text. "Message is not modified" is never an error.

With drafts (`sendMessageDraft`, private chats) the part being written is an ephemeral draft,
animated under one draft id, each part past 4096 is sent as a message once the next begins,
and the final text is sent as messages. A draft has no message id: a restart mid-draft finds
the question unanswered and writes its reply again. Where Telegram refuses drafts the reply
goes on by edits, and the chat is reported (`DraftRefusals`) so later replies edit at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from telegram import Bot

from bot.chat.sink import STALLED_NOTE, MessageRecorder, ReplyAction, shown_text
from bot.i18n import _, _n
from bot.telegram.buttons import MarkupKey, ReplyButtons
from bot.telegram.flood import FloodGate
from bot.telegram.reply_messages import DraftRefusals, ReplyMessages
from bot.telegram.thinking import Thought

TYPING_REPEAT = 4.0
FIRST_TEXT_GRACE = 0.05
"""How long a reply's first text waits for more: a reply written by then is one message."""
COMPLETE_WAIT = 2.0
"""How long a complete text waits for `finish` (its note and buttons) before it is shown."""

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[Any]"]
"""Starts a background task the bot cancels when it stops."""


async def set_within(event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` is set within `seconds`. A cancellation always goes through: Python
    3.11's `asyncio.wait_for` returns instead when the event is set in the same turn of the
    loop as the task is cancelled, and a streamer that lost its cancellation so waited on,
    4 s at a time, holding up the loop's end (a bot's shutdown) for ever."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


class ReplyStreamer:
    """A `ReplySink` that shows a reply in a Telegram chat."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        interval: float,
        reply_to: int | None = None,
        thread_id: int | None = None,
        existing_ids: Sequence[int] = (),
        shown: str | None = None,
        gate: FloodGate | None = None,
        on_messages: MessageRecorder | None = None,
        buttons: ReplyButtons | None = None,
        drafts: DraftRefusals | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        """`existing_ids`: messages that show this reply already (edited in place); `shown`:
        the text they show, a reply being written again (it stays, with a Stop button, until
        new text replaces it); `buttons`: the reply's; `drafts`: stream as a draft, where
        Telegram's refusals go; `spawn`: starts the streamer's background task, so that the
        bot's stop cancels it with the reply (a reply cancelled mid-way never finishes it)."""
        self._gate = gate or FloodGate(interval)
        self._messages = ReplyMessages(
            bot, chat_id, gate=self._gate, reply_to=reply_to, thread_id=thread_id,
            existing_ids=existing_ids, shown=shown, buttons=buttons, drafts=drafts,
            on_messages=on_messages,
        )
        self._buttons = buttons
        self._rewriting = shown is not None and bool(existing_ids)
        self._latest = shown if shown is not None and self._rewriting else ""
        self._started_reply = False
        self._thought: Thought | None = None
        """What the reply shows of a thinking model's thinking (`bot.telegram.thinking`)."""
        self._first_text_at: float | None = None
        self._text_shown = False
        self._complete = False
        self._final: str | None = None
        self._actions: tuple[ReplyAction, ...] = ()
        self._changed = asyncio.Event()
        if self._rewriting:
            self._changed.set()  # its Stop button at once
        self._ending = asyncio.Event()
        """Set once the text is complete or final: a held first text goes out."""
        self._finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._spawn = spawn
        self._chat_id = chat_id
        self._last_typing = float("-inf")

    @property
    def message_ids(self) -> list[int]:
        return self._messages.ids

    async def waiting(self, ahead: int, *, stalled: bool = False) -> None:
        if not self._started_reply and not self._rewriting:  # never in place of a reply
            self._latest = (
                "⏳ " + _(STALLED_NOTE) if stalled
                else _n("⏳ {n} ahead of you…", "⏳ {n} ahead of you…", ahead)
            )
            self._changed.set()
            self._ensure_task()

    async def update(self, text: str, *, complete: bool = False) -> None:
        self._started_reply = True
        if self._first_text_at is None and text.strip():
            self._first_text_at = time.monotonic()
        self._latest = text
        if complete:
            self._complete = True
            self._ending.set()
        self._changed.set()
        self._ensure_task()

    async def thinking(self, text: str | None, seconds: float) -> None:
        self._started_reply = True
        self._thought = Thought(text, int(seconds))
        self._changed.set()
        self._ensure_task()

    async def finish(
        self, text: str, note: str | None = None, *, actions: Sequence[ReplyAction] = (),
        thinking: str | None = None,
    ) -> Sequence[int]:
        self._thought = Thought(thinking) if thinking else None
        self._final = shown_text(text, note)
        self._actions = tuple(actions)
        self._ending.set()
        self._finished.set()
        self._changed.set()
        self._ensure_task()
        assert self._task is not None
        await self._task
        return self._messages.ids

    async def fail(self, message: str) -> None:
        await self.finish("", message)

    async def typing(self) -> None:
        """Show "typing…" now (the caller's reply is about to be worked on)."""
        self._ensure_task()

    # -- the background loop -----------------------------------------------------------------

    def _ensure_task(self) -> None:
        if self._task is None:
            self._task = (self._spawn(self._run(), f"reply streamer in chat {self._chat_id}")
                          if self._spawn is not None
                          else asyncio.get_running_loop().create_task(self._run()))

    async def _run(self) -> None:
        shown: tuple[str, Thought | None] | None = None
        while True:
            refresh = False
            if self._final is None:
                if not self._text_shown:
                    await self._send_typing()
                if not await set_within(self._changed, self._idle_timeout()):
                    refresh = self._draft_expiring()
                    if not refresh:
                        continue
                await self._hold()
            await self._gate.wait()
            self._changed.clear()
            final = self._final is not None
            target = self._final if self._final is not None else self._latest
            view = (target, self._thought)
            if not final and ((not target.strip() and self._thought is None)
                              or (view == shown and not refresh)):
                continue
            if await self._messages.show(target, final=final, refresh=refresh,
                                         last_key=self._key(final=final),
                                         thought=self._thought):
                shown = view
                self._text_shown = self._text_shown or self._started_reply
                if final:
                    return

    async def _hold(self) -> None:
        """Hold a reply's first text a moment (a reply done by then goes out whole, as one
        message with its buttons), and a complete text until `finish` brings its buttons."""
        if self._final is not None or self._first_text_at is None:
            return
        if not self._text_shown and not self._complete:
            left = self._first_text_at + FIRST_TEXT_GRACE - time.monotonic()
            if left > 0:
                await set_within(self._ending, left)
        if self._complete and self._final is None:
            await set_within(self._finished, COMPLETE_WAIT)

    def _idle_timeout(self) -> float:
        due = self._messages.draft_due()
        return TYPING_REPEAT if due is None else max(0.0, min(TYPING_REPEAT, due))

    def _draft_expiring(self) -> bool:
        due = self._messages.draft_due()
        return due is not None and due <= 0

    async def _send_typing(self) -> None:
        now = time.monotonic()
        if now - self._last_typing < TYPING_REPEAT:
            return
        self._last_typing = now
        await self._messages.typing()

    def _key(self, *, final: bool) -> MarkupKey:
        """The buttons of the reply's last message."""
        if self._buttons is None:
            return ()
        return self._buttons.after(self._actions) if final else self._buttons.while_writing()
