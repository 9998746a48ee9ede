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
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from telegram import Bot, LinkPreviewOptions, Message, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from bot.chat.sink import STALLED_NOTE, MessageRecorder, ReplyAction, shown_text
from bot.core.markup import RenderedMessage, render_reply
from bot.i18n import _, _n
from bot.telegram.buttons import MarkupKey, ReplyButtons
from bot.telegram.flood import FloodGate

log = logging.getLogger(__name__)

TYPING_REPEAT = 4.0
FINAL_NETWORK_RETRIES = 5
FIRST_TEXT_GRACE = 0.05
"""How long a reply's first text waits for more: a reply written by then is one message."""
COMPLETE_WAIT = 2.0
"""How long a complete text waits for `finish` (its note and buttons) before it is shown."""
DRAFT_REFRESH = 20.0
"""Telegram shows a draft for 30 s: one left unchanged this long is sent again."""


class DraftRefusals(Protocol):
    """Told when Telegram refuses a draft in a chat."""

    async def refused(self, chat_id: int, *, for_good: bool) -> None:
        """`for_good`: Telegram said no for this chat; else the Bot API server has no drafts."""
        ...


_Shown = tuple[RenderedMessage, MarkupKey | None]
"""A message as last sent: its text and its buttons (None: not known, e.g. after a restart)."""


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
    ) -> None:
        """`existing_ids`: messages that show this reply already (edited in place); `shown`:
        the text they show, a reply being written again (it stays, with a Stop button, until
        new text replaces it); `buttons`: the reply's; `drafts`: stream as a draft, where
        Telegram's refusals go."""
        self._bot = bot
        self._chat_id = chat_id
        self._reply_to = reply_to
        self._thread_id = thread_id
        self._gate = gate or FloodGate(interval)
        self._ids: list[int] = list(existing_ids)
        self._shown: list[_Shown | None] = [None] * len(self._ids)
        if shown is not None and self._ids:
            rendered = render_reply(shown)
            if len(rendered) == len(self._ids):
                self._shown = [(m, ()) for m in rendered[:-1]] + [(rendered[-1], None)]
        self._buttons = buttons
        self._drafts = drafts
        self._drafting = drafts is not None
        self._draft_base = secrets.randbelow(1 << 30) + 1
        self._draft_shown: tuple[int, RenderedMessage] | None = None
        self._draft_at = float("-inf")
        self._plain = False
        self._rewriting = shown is not None and bool(self._ids)
        self._latest = shown if shown is not None and self._rewriting else ""
        self._started_reply = False
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
        self._last_typing = float("-inf")
        self._on_messages = on_messages

    @property
    def message_ids(self) -> list[int]:
        return list(self._ids)

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

    async def finish(
        self, text: str, note: str | None = None, *, actions: Sequence[ReplyAction] = ()
    ) -> Sequence[int]:
        self._final = shown_text(text, note)
        self._actions = tuple(actions)
        self._ending.set()
        self._finished.set()
        self._changed.set()
        self._ensure_task()
        assert self._task is not None
        await self._task
        return list(self._ids)

    async def fail(self, message: str) -> None:
        await self.finish("", message)

    async def typing(self) -> None:
        """Show "typing…" now (the caller's reply is about to be worked on)."""
        self._ensure_task()

    # -- the background loop -----------------------------------------------------------------

    def _ensure_task(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        shown_text: str | None = None
        while True:
            refresh = False
            if self._final is None:
                if not self._text_shown:
                    await self._send_typing()
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=self._idle_timeout())
                except TimeoutError:
                    refresh = self._draft_expiring()
                    if not refresh:
                        continue
                await self._hold()
            await self._gate.wait()
            self._changed.clear()
            final = self._final is not None
            target = self._final if self._final is not None else self._latest
            if not final and (not target.strip() or (target == shown_text and not refresh)):
                continue
            if await self._show(target, final=final, refresh=refresh):
                shown_text = target
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ending.wait(), timeout=left)
        if self._complete and self._final is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), timeout=COMPLETE_WAIT)

    def _idle_timeout(self) -> float:
        if self._drafting and self._draft_shown is not None:
            due = self._draft_at + DRAFT_REFRESH - time.monotonic()
            return max(0.0, min(TYPING_REPEAT, due))
        return TYPING_REPEAT

    def _draft_expiring(self) -> bool:
        return (
            self._drafting and self._draft_shown is not None
            and time.monotonic() - self._draft_at >= DRAFT_REFRESH
        )

    async def _send_typing(self) -> None:
        now = time.monotonic()
        if now - self._last_typing < TYPING_REPEAT:
            return
        self._last_typing = now
        kwargs: dict[str, Any] = {}
        if self._thread_id is not None:
            kwargs["message_thread_id"] = self._thread_id
        # A chat action is not a message: it waits out flood bans but takes no turn.
        await self._call(
            lambda: self._bot.send_chat_action(self._chat_id, ChatAction.TYPING, **kwargs),
            final=False, counts=False,
        )

    def _key(self, *, final: bool) -> MarkupKey:
        """The buttons of the reply's last message."""
        if self._buttons is None:
            return ()
        return self._buttons.after(self._actions) if final else self._buttons.while_writing()

    async def _show(self, text: str, *, final: bool, refresh: bool = False) -> bool:
        """Bring the chat's messages to `text`. False if a flood ban cut the attempt short."""
        messages = render_reply(text)
        last = len(messages) - 1
        for index, message in enumerate(messages):
            key = self._key(final=final) if index == last else ()
            if self._drafting and not final and index == last and index >= len(self._ids):
                ok = await self._draft(index, message, key, refresh=refresh)
            elif index < len(self._ids):
                if self._shown[index] == (message, key):
                    continue
                ok = await self._edit(index, message, key, final=final)
            else:
                ok = await self._send(message, key, final=final)
            if not ok:
                return False
        if final:
            for extra in self._ids[len(messages):]:
                # A reply written again came out shorter: clear the extra messages.
                await self._call(self._deleter(extra), final=False)
            del self._ids[len(messages):]
            del self._shown[len(messages):]
        return True

    def _deleter(self, message_id: int) -> Callable[[], Awaitable[Any]]:
        return lambda: self._bot.delete_message(self._chat_id, message_id)

    def _text_and_mode(self, message: RenderedMessage) -> tuple[str, str | None]:
        if self._plain:
            return message.plain, None
        return message.html, ParseMode.HTML

    def _markup_kwargs(self, key: MarkupKey) -> dict[str, Any]:
        markup = self._buttons.markup(key) if self._buttons is not None else None
        return {"reply_markup": markup} if markup is not None else {}

    async def _draft(
        self, index: int, message: RenderedMessage, key: MarkupKey, *, refresh: bool
    ) -> bool:
        if not refresh and self._draft_shown == (index, message):
            return True
        kwargs: dict[str, Any] = {}
        if self._thread_id is not None:
            kwargs["message_thread_id"] = self._thread_id

        async def call() -> Any:
            text, mode = self._text_and_mode(message)
            # One draft id per message of the reply: a draft animates while it grows.
            return await self._bot.send_message_draft(
                self._chat_id, self._draft_base + index, text, parse_mode=mode, **kwargs
            )

        try:
            result = await self._call(call, final=False, draft=True)
        except _DraftRefused as exc:
            log.info("chat %s: no drafts here (%s); streaming by edits", self._chat_id, exc)
            self._drafting = False
            if self._drafts is not None:
                try:
                    await self._drafts.refused(self._chat_id, for_good=exc.for_good)
                except Exception:
                    log.exception("could not remember that chat %s refuses drafts",
                                  self._chat_id)
            return await self._send(message, key, final=False)
        if result is None:
            return False
        self._draft_shown = (index, message)
        self._draft_at = time.monotonic()
        return True

    async def _send(self, message: RenderedMessage, key: MarkupKey, *, final: bool) -> bool:
        kwargs: dict[str, Any] = {"link_preview_options": LinkPreviewOptions(is_disabled=True)}
        kwargs.update(self._markup_kwargs(key))
        if self._thread_id is not None:
            kwargs["message_thread_id"] = self._thread_id
        if self._reply_to is not None and not self._ids:
            kwargs["reply_parameters"] = ReplyParameters(
                self._reply_to, allow_sending_without_reply=True
            )

        async def call() -> Message:
            text, mode = self._text_and_mode(message)
            return await self._bot.send_message(self._chat_id, text, parse_mode=mode, **kwargs)

        sent = await self._call(call, final=final)
        if sent is None:
            return False
        if not isinstance(sent, Message):
            return True  # given up on (the chat refuses us): nothing to record
        self._ids.append(sent.message_id)
        self._shown.append((message, key))
        if self._on_messages is not None:
            try:
                await self._on_messages(list(self._ids))
            except Exception:
                log.exception("could not store the message ids of a reply")
        return True

    async def _edit(
        self, index: int, message: RenderedMessage, key: MarkupKey, *, final: bool
    ) -> bool:
        async def call() -> Any:
            text, mode = self._text_and_mode(message)
            # Without reply_markup an edit removes the buttons: the last message keeps its own.
            return await self._bot.edit_message_text(
                text, chat_id=self._chat_id, message_id=self._ids[index], parse_mode=mode,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                **self._markup_kwargs(key),
            )

        try:
            result = await self._call(call, final=final)
        except _MessageGone:
            # The user deleted our message: continue in a new one.
            del self._ids[index:]
            del self._shown[index:]
            return await self._send(message, key, final=final)
        if result is None:
            return False
        self._shown[index] = (message, key)
        return True

    async def _call(
        self, make: Callable[[], Awaitable[Any]], *, final: bool, draft: bool = False,
        counts: bool = True,
    ) -> Any:
        """One API call under the flood gate. Returns None when it was given up.

        `counts=False`: a call that waits out bans but does not space the next (a chat
        action); `draft`: a refusal raises `_DraftRefused`.
        """
        network_failures = 0
        while True:
            try:
                result = await self._gate.call(make, spacing=counts, counts=counts)
                return True if result is None or result is True else result
            except RetryAfter:
                # The gate holds the ban (FloodLimiter logged it): the next try waits it out.
                if not final:
                    return None
            except BadRequest as exc:
                text = exc.message.lower()
                if "not modified" in text:
                    return True
                if "can't parse entities" in text and not self._plain:
                    log.warning("chat %s: HTML rejected (%s); sending plain text", self._chat_id,
                                exc.message)
                    self._plain = True
                    continue
                if "message to edit not found" in text:
                    raise _MessageGone from exc
                if draft:
                    raise _DraftRefused(exc.message, for_good=True) from exc
                log.error("chat %s: Telegram refused a reply: %s", self._chat_id, exc.message)
                return None if not final else True
            except InvalidToken as exc:
                if not draft:
                    raise
                # A Bot API server without sendMessageDraft answers 404, which PTB reports
                # as a bad token; the token works for everything else.
                raise _DraftRefused(exc.message, for_good=False) from exc
            except Forbidden as exc:
                log.warning("chat %s: cannot write here (%s)", self._chat_id, exc.message)
                return True if final else None
            except (TimedOut, NetworkError) as exc:
                if not final:
                    return None
                network_failures += 1
                if network_failures > FINAL_NETWORK_RETRIES:
                    log.error("chat %s: giving up on a reply after network errors: %s",
                              self._chat_id, exc)
                    return True
                await asyncio.sleep(min(30.0, 2.0**network_failures))


class _MessageGone(Exception):
    """The message being edited no longer exists."""


class _DraftRefused(Exception):
    """Telegram will not show a draft here."""

    def __init__(self, reason: str, *, for_good: bool) -> None:
        super().__init__(reason)
        self.for_good = for_good
