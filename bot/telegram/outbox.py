"""A chat's outbox: the answers to its commands, sent in the background, one message at a time.

A handler posts its answer and returns at once. Waiting for Telegram (a flood ban on the chat,
or the rate limiter holding a group to 20 messages a minute) therefore never holds the update's
place, nor the chat's next updates behind it. Answers go one per message while the chat keeps
up; answers that had to wait (a ban), or more of them waiting than a chat of its kind sends
singly, go out together as one message: the same text once, the newest answers that fit one
message, and a line counting those left out. However many commands a chat sends, a burst costs
a bounded number of messages, and the outbox keeps at most `MAX_PENDING` answers of a chat.

Answers in different forum topics are never merged; each goes to its own topic.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from telegram import Bot, ReplyParameters
from telegram.constants import MessageLimit
from telegram.error import RetryAfter, TelegramError

from bot.i18n import _n
from bot.telegram.flood import SEND_TRIES, FloodGate
from bot.telegram.streamer import Spawn

log = logging.getLogger(__name__)

MAX_PENDING = 50
"""Answers an outbox keeps waiting; an older one beyond this is dropped (and counted)."""
SINGLY_IN_GROUPS = 1
"""In a group the bot may post 20 messages a minute, shared with the model's replies there:
as soon as a second answer waits, the waiting ones share a message."""
SINGLY_IN_PRIVATE = 3
"""A few commands typed together in a private chat are answered one by one; a burst beyond
that shares messages (they would spend the bot's overall 30 messages a second)."""
SEPARATOR = "\n\n"
NOTE_ROOM = 100
"""Room kept in a merged message for the line counting the answers left out."""

@dataclass(frozen=True)
class Answer:
    """One command's answer: its text, the message it quotes (groups) and its forum topic."""

    text: str
    reply_to: int | None = None
    thread_id: int | None = None


@dataclass(frozen=True)
class Batch:
    """What one message carries: answers of one topic, and how many older ones it leaves out."""

    answers: tuple[Answer, ...]
    left_out: int = 0

    def text(self) -> str:
        """The answers as one message, oldest first: each text once (an answer repeated is
        answered by its newest copy), the newest that fit, and a line counting the rest."""
        texts: list[str] = []  # newest first
        for answer in reversed(self.answers):
            if answer.text not in texts:
                texts.append(answer.text)
        kept: list[str] = []
        size = 0
        room = MessageLimit.MAX_TEXT_LENGTH - NOTE_ROOM
        for text in texts:
            if kept and size + len(SEPARATOR) + len(text) > room:
                break
            kept.append(text)
            size += len(SEPARATOR) + len(text)
        dropped = self.left_out + len(texts) - len(kept)
        parts = [_left_out_note(dropped)] if dropped else []
        return SEPARATOR.join([*parts, *reversed(kept)])[: MessageLimit.MAX_TEXT_LENGTH]

    @property
    def reply_to(self) -> int | None:
        """The newest command it answers (quoted in groups)."""
        return self.answers[-1].reply_to

    @property
    def thread_id(self) -> int | None:
        return self.answers[0].thread_id


def _left_out_note(count: int) -> str:
    return _n("({n} earlier answer left out: too many commands at once.)",
              "({n} earlier answers left out: too many commands at once.)", count)


class Outbox:
    """The answers waiting to be sent to one chat, and the one task sending them."""

    def __init__(self, bot: Bot, chat_id: int, gate: FloodGate, *, singly: int, spawn: Spawn,
                 on_idle: Callable[[Outbox], None]) -> None:
        """`singly`: how many waiting answers still go one per message (more share one)."""
        self._bot = bot
        self._singly = singly
        self._chat_id = chat_id
        self._gate = gate
        self._spawn = spawn
        self._on_idle = on_idle
        self._pending: deque[Answer] = deque()
        self._left_out = 0
        self._sending = False

    @property
    def idle(self) -> bool:
        return not self._sending and not self._pending

    def post(self, answer: Answer) -> None:
        """Queue an answer; it goes out as soon as the chat may be written to."""
        self._pending.append(answer)
        if len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self._left_out += 1
        if not self._sending:
            self._sending = True
            self._spawn(self._drain(), f"answers to chat {self._chat_id}")

    async def _drain(self) -> None:
        try:
            bans = 0
            while self._pending:
                # Wait out a ban before taking the batch: what arrives meanwhile joins it.
                banned = self._gate.ready_at(spacing=False) > time.monotonic()
                await self._gate.wait(spacing=False)
                batch = self._take(merge=banned)
                try:
                    await self._gate.call(partial(self._send, batch), spacing=False)
                    bans = 0
                except RetryAfter:
                    bans += 1
                    if bans < SEND_TRIES:
                        self._put_back(batch)
                    else:
                        log.warning("chat %s: %d answers dropped after %d flood bans in a row",
                                    self._chat_id, len(batch.answers), bans)
                        bans = 0
                except TelegramError as exc:
                    log.warning("chat %s: could not send %d answers: %s", self._chat_id,
                                len(batch.answers), exc)
        finally:
            self._sending = False
            if self.idle:
                self._on_idle(self)

    def _take(self, *, merge: bool) -> Batch:
        """The oldest answer alone; or, when they had to wait (`merge`) or too many wait, every
        pending answer of its topic (answers in other topics wait their turn)."""
        thread = self._pending[0].thread_id
        taken = tuple(a for a in self._pending if a.thread_id == thread)
        if not merge and len(taken) <= self._singly and not self._left_out:
            taken = (self._pending.popleft(),)
        else:
            self._pending = deque(a for a in self._pending if a.thread_id != thread)
        batch = Batch(taken, self._left_out)
        self._left_out = 0
        return batch

    def _put_back(self, batch: Batch) -> None:
        """A ban stopped the batch: its answers go first in the next one."""
        self._pending.extendleft(reversed(batch.answers))
        self._left_out += batch.left_out
        while len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self._left_out += 1

    async def _send(self, batch: Batch) -> None:
        quote = (ReplyParameters(batch.reply_to, allow_sending_without_reply=True)
                 if batch.reply_to is not None else None)
        await self._bot.send_message(self._chat_id, batch.text(), reply_parameters=quote,
                                     message_thread_id=batch.thread_id)
