"""The messages that show one reply in a Telegram chat, and every Bot API call that changes
them: sent, edited in place, split past 4096, a live draft where the chat allows one, HTML or
(once Telegram rejects it) plain text, each call under the chat's flood gate with the reply's
rules for errors (`ReplyStreamer` decides what to show and when).
"""

from __future__ import annotations

import asyncio
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

from bot.chat.sink import MessageRecorder
from bot.core.markup import RenderedMessage, render_reply
from bot.telegram.buttons import MarkupKey, ReplyButtons
from bot.telegram.flood import FloodGate
from bot.telegram.thinking import Thought, render_with_thought

log = logging.getLogger(__name__)

FINAL_NETWORK_RETRIES = 5
DRAFT_REFRESH = 20.0
"""Telegram shows a draft for 30 s: one left unchanged this long is sent again."""


class DraftRefusals(Protocol):
    """Told when Telegram refuses a draft in a chat."""

    async def refused(self, chat_id: int, *, for_good: bool) -> None:
        """`for_good`: Telegram said no for this chat; else the Bot API server has no drafts."""
        ...


_Shown = tuple[RenderedMessage, MarkupKey | None]
"""A message as last sent: its text and its buttons (None: not known, e.g. after a restart)."""


class ReplyMessages:
    """The messages of one reply in one chat: their ids and what each shows."""

    def __init__(
        self, bot: Bot, chat_id: int, *, gate: FloodGate, reply_to: int | None,
        thread_id: int | None, existing_ids: Sequence[int], shown: str | None,
        buttons: ReplyButtons | None, drafts: DraftRefusals | None,
        on_messages: MessageRecorder | None,
    ) -> None:
        self._bot = bot
        self._chat_id = chat_id
        self._gate = gate
        self._reply_to = reply_to
        self._thread_id = thread_id
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
        self._on_messages = on_messages

    @property
    def ids(self) -> list[int]:
        return list(self._ids)

    def draft_due(self) -> float | None:
        """Seconds until the draft on show must be sent again (Telegram lets it expire), or
        None when no draft is on show."""
        if not self._drafting or self._draft_shown is None:
            return None
        return self._draft_at + DRAFT_REFRESH - time.monotonic()

    async def typing(self) -> None:
        """Show "typing…" in the chat (and its topic)."""
        kwargs: dict[str, Any] = {}
        if self._thread_id is not None:
            kwargs["message_thread_id"] = self._thread_id
        # A chat action is not a message: it waits out flood bans but takes no turn.
        await self._call(
            lambda: self._bot.send_chat_action(self._chat_id, ChatAction.TYPING, **kwargs),
            final=False, counts=False,
        )

    async def show(
        self, text: str, *, final: bool, last_key: MarkupKey, refresh: bool = False,
        thought: Thought | None = None,
    ) -> bool:
        """Bring the chat's messages to `text` (with a thinking model's `thought`), the last
        one with the buttons `last_key`. False if a flood ban cut the attempt short."""
        messages = render_with_thought(text, thought, final=final)
        last = len(messages) - 1
        for index, message in enumerate(messages):
            key = last_key if index == last else ()
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
