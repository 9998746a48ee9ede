"""Streaming a reply into Telegram: one message edited as the model writes, split past 4096.

At most one API call per interval per reply (1 s in private chats, 3 s in groups), the typing
action until the first words arrive, and flood control honoured exactly: after a 429 nothing is
sent to the chat before `retry_after` has passed, intermediate texts are dropped (the next call
carries the newest text) and the final text is always delivered. HTML that Telegram rejects is
sent again as plain text. "Message is not modified" is never an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from telegram import Bot, LinkPreviewOptions, Message, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from bot.chat.sink import STALLED_NOTE, MessageRecorder
from bot.core.markup import RenderedMessage, render_reply
from bot.telegram.ratelimit import retry_seconds

log = logging.getLogger(__name__)

TYPING_REPEAT = 4.0
FINAL_NETWORK_RETRIES = 5


class FloodGate:
    """When the next call to one chat may go out: spacing plus any `retry_after` ban."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last_call = float("-inf")
        self._banned_until = float("-inf")

    def ready_at(self, *, spacing: bool = True) -> float:
        if not spacing:
            return self._banned_until
        return max(self._last_call + self.interval, self._banned_until)

    async def wait(self, *, spacing: bool = True) -> None:
        """Sleep until a call may go out; `spacing=False` waits out flood bans only."""
        # A ban may grow while we sleep (another reply in the chat got a 429): check again.
        while (delay := self.ready_at(spacing=spacing) - self._clock()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)

    def called(self) -> None:
        self._last_call = self._clock()

    def banned(self, started: float, seconds: float) -> None:
        """A 429 arrived for a call started at `started`.

        If the call itself took `seconds` or longer, a rate limiter between us and Telegram
        already waited out the ban; otherwise the ban runs from now.
        """
        now = self._clock()
        until = now if now - started >= seconds else now + seconds
        self._banned_until = max(self._banned_until, until)


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
        gate: FloodGate | None = None,
        on_messages: MessageRecorder | None = None,
    ) -> None:
        self._bot = bot
        self._chat_id = chat_id
        self._reply_to = reply_to
        self._thread_id = thread_id
        self._gate = gate or FloodGate(interval)
        self._ids: list[int] = list(existing_ids)
        self._shown: list[RenderedMessage | None] = [None] * len(self._ids)
        self._plain = False
        self._latest = ""
        self._started_reply = False
        self._final: str | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_typing = float("-inf")
        self._on_messages = on_messages

    @property
    def message_ids(self) -> list[int]:
        return list(self._ids)

    async def waiting(self, ahead: int, *, stalled: bool = False) -> None:
        if not self._started_reply:
            self._latest = f"⏳ {STALLED_NOTE}" if stalled else f"⏳ {ahead} ahead of you…"
            self._changed.set()
            self._ensure_task()

    async def update(self, text: str) -> None:
        self._started_reply = True
        self._latest = text
        self._changed.set()
        self._ensure_task()

    async def finish(self, text: str, note: str | None = None) -> Sequence[int]:
        final = text.strip()
        if note:
            final = f"{final}\n\n_{note}_" if final else note
        self._final = final or "…"
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
            if self._final is None:
                if not self._ids or not self._latest.strip():
                    await self._send_typing()
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=TYPING_REPEAT)
                except TimeoutError:
                    continue
            await self._gate.wait()
            self._changed.clear()
            final = self._final is not None
            target = self._final if self._final is not None else self._latest
            if not final and (not target.strip() or target == shown_text):
                continue
            if await self._show(target, final=final):
                shown_text = target
                if final:
                    return

    async def _send_typing(self) -> None:
        now = time.monotonic()
        if now - self._last_typing < TYPING_REPEAT:
            return
        self._last_typing = now
        kwargs: dict[str, Any] = {}
        if self._thread_id is not None:
            kwargs["message_thread_id"] = self._thread_id
        await self._call(
            lambda: self._bot.send_chat_action(self._chat_id, ChatAction.TYPING, **kwargs),
            final=False,
        )

    async def _show(self, text: str, *, final: bool) -> bool:
        """Bring the chat's messages to `text`. False if a flood ban cut the attempt short."""
        messages = render_reply(text)
        for index, message in enumerate(messages):
            if index < len(self._ids):
                if self._shown[index] == message:
                    continue
                ok = await self._edit(index, message, final=final)
            else:
                ok = await self._send(message, final=final)
            if not ok:
                return False
        for extra in self._ids[len(messages):]:
            # A reply redone after a restart came out shorter: clear the extra messages.
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

    async def _send(self, message: RenderedMessage, *, final: bool) -> bool:
        kwargs: dict[str, Any] = {"link_preview_options": LinkPreviewOptions(is_disabled=True)}
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
        self._ids.append(sent.message_id)
        self._shown.append(message)
        if self._on_messages is not None:
            try:
                await self._on_messages(list(self._ids))
            except Exception:
                log.exception("could not store the message ids of a reply")
        return True

    async def _edit(self, index: int, message: RenderedMessage, *, final: bool) -> bool:
        async def call() -> Any:
            text, mode = self._text_and_mode(message)
            return await self._bot.edit_message_text(
                text, chat_id=self._chat_id, message_id=self._ids[index], parse_mode=mode,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )

        try:
            result = await self._call(call, final=final)
        except _MessageGone:
            # The user deleted our message: continue in a new one.
            del self._ids[index:]
            del self._shown[index:]
            return await self._send(message, final=final)
        if result is None:
            return False
        self._shown[index] = message
        return True

    async def _call(self, make: Callable[[], Awaitable[Any]], *, final: bool) -> Any:
        """One API call under the flood gate. Returns None when it was given up."""
        network_failures = 0
        while True:
            await self._gate.wait()
            started = time.monotonic()
            self._gate.called()
            try:
                result = await make()
                return True if result is None or result is True else result
            except RetryAfter as exc:
                seconds = retry_seconds(exc)
                self._gate.banned(started, seconds)
                # FloodLimiter logged the ban; the streamer only waits it out.
                log.debug("chat %s: flood control, retry after %.0f s", self._chat_id, seconds)
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
                log.error("chat %s: Telegram refused a reply: %s", self._chat_id, exc.message)
                return None if not final else True
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
