"""The one request path of every engine, on the event loop's side: admission within the queue
bound, the fair order of waiting requests and their places, delivery of events, and the one way
a request ends.

Like llama.cpp's server (one `server_queue` whatever the task), each engine keeps a
`RequestQueue` and lends it a `Runner` that runs what the queue starts: the local engines hand
a request to their worker thread (`Intake`), the remote engine to a model server. The
queue starts waiting requests whenever the runner has room, round-robin between chats
(`FairQueue`), and tells the others their places. Cancelling (a `/stop`, a reader that stopped
listening) calls back at once: a waiting request ends there and then, a running one is handed
to the runner to stop. Nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from bot.engine.base import (
    CancelToken,
    Finished,
    GenerationEvent,
    GenerationRequest,
    Queued,
    Restarted,
    StopReason,
    TextDelta,
)
from bot.engine.scheduler import FairQueue
from bot.errors import EngineBusy, ModelError
from bot.i18n import _

log = logging.getLogger(__name__)

Outcome = Finished | BaseException


@dataclass(eq=False)
class Ticket:
    """One accepted request from admission to its end."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)
    started: float = field(default_factory=time.monotonic)
    ahead: int | None = None
    stalled: bool = False
    text: str = ""
    """The reply's answer delivered so far, its thinking apart (void after a `Restarted`)."""
    ended: bool = False
    sent_text: bool = False
    """Worker side (`Intake`): whether the first text went out (it goes at once)."""
    worker_ended: bool = False
    """Worker side: ended there, the outcome on its way to the event loop."""

    @property
    def chat_key(self) -> str:
        return self.request.chat_key

    @property
    def share(self) -> str:
        """Whose turn it takes in the fair queue (a Telegram chat, all its topics together)."""
        return self.request.share or self.request.chat_key

    def tell(self, event: GenerationEvent | BaseException) -> None:
        self.events.put_nowait(event)


_GO = object()
"""Told to a `Turn` when it may start."""


@dataclass(eq=False)
class Turn:
    """Other work on this machine's CPU (a transcription, reading an image) that waits for its
    fair turn among the replies and holds one of the runner's places while it runs; the holder
    runs it (see `RequestQueue.turn`)."""

    chat_key: str
    share: str
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    ahead: int | None = None
    stalled: bool = False
    ended: bool = False

    def tell(self, event: object) -> None:
        self.events.put_nowait(event)


class TurnCancelled(Exception):
    """The work was cancelled (its cancel token set) while it waited for its turn."""


Waiter = Ticket | Turn


class Runner(Protocol):
    """What runs the requests a `RequestQueue` starts (on the event loop's thread)."""

    def can_start(self, running: int) -> bool:
        """Whether one more request may start now, `running` being under way."""
        ...

    def start(self, ticket: Ticket) -> None:
        """Run it; it ends with `RequestQueue.end` (or goes back with `requeue`)."""
        ...

    def stop(self, ticket: Ticket) -> None:
        """A running request was cancelled: end it soon, as cancelled."""
        ...

    @property
    def stalled(self) -> bool:
        """Nothing can start until something outside comes back (every model server down)."""
        ...


class RequestQueue:
    """The bounded, fair way in and the way out of one engine; see the module's docstring."""

    def __init__(self, *, max_queue: int, runner: Runner) -> None:
        self._max_queue = max_queue
        self._runner = runner
        self._waiting: FairQueue[Waiter] = FairQueue()
        self._running: set[Waiter] = set()
        self.closed = False

    @property
    def pending(self) -> int:
        """Requests accepted and not ended (running and waiting)."""
        return len(self._waiting) + len(self._running)

    @property
    def running(self) -> int:
        return len(self._running)

    def _admit(self) -> None:
        """Raise unless one more request may wait: the model is loaded and the queue has room."""
        if self.closed:
            raise ModelError("the model was unloaded")
        if self.pending >= self._max_queue:
            raise EngineBusy(_(
                "The model is busy with {count} requests; try again in a minute.",
                count=self.pending,
            ))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Admit `request` and yield its events up to `Finished`.

        Raises EngineBusy when the queue is full, and whatever the request ended with.
        Leaving early (the reader stopped) cancels the request.
        """
        self._admit()
        loop = asyncio.get_running_loop()
        ticket = Ticket(request, loop)
        self._waiting.push(ticket.share, ticket)
        request.cancel.on_cancel(lambda: self._cancel_soon(ticket))
        self.dispatch()
        finished = False
        try:
            while True:
                event = await ticket.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    finished = True
                    return
        finally:
            if not finished:
                request.cancel.cancel()

    def dispatch(self) -> None:
        """Start waiting requests while the runner has room; tell the rest their places."""
        while not self.closed and self._runner.can_start(len(self._running)):
            popped = self._waiting.pop()
            if popped is None:
                break
            waiter = popped[1]
            self._running.add(waiter)
            if isinstance(waiter, Turn):
                waiter.tell(_GO)  # its holder runs it
            else:
                self._runner.start(waiter)
        stalled = self._runner.stalled
        for ahead, waiter in enumerate(self._waiting.order(), start=1):
            if (waiter.ahead, waiter.stalled) != (ahead, stalled):
                waiter.ahead, waiter.stalled = ahead, stalled
                waiter.tell(Queued(ahead, stalled=stalled))

    def deliver(self, ticket: Ticket, event: TextDelta | Restarted) -> None:
        """A piece of the reply (or word that it starts over) for its reader."""
        if ticket.ended:
            return
        if isinstance(event, Restarted):
            ticket.text = ""
        elif not event.thinking:
            ticket.text += event.text
        ticket.events.put_nowait(event)

    def end(self, ticket: Waiter, outcome: Outcome) -> None:
        """The one way a request ends: its outcome goes to its reader, its place is freed and
        the next request may start."""
        if ticket.ended:
            raise RuntimeError(f"a request of chat {ticket.chat_key} ended twice")
        ticket.ended = True
        if ticket in self._running:
            self._running.discard(ticket)
            self._waiting.done(ticket.share)
        else:
            self._waiting.remove(ticket)
        ticket.tell(outcome)
        self.dispatch()

    @asynccontextmanager
    async def turn(
        self, *, chat_key: str, cancel: CancelToken, share: str | None = None,
        on_place: Callable[[Queued], Awaitable[None]] | None = None,
    ) -> AsyncIterator[None]:
        """Wait for a fair turn among the requests (`on_place` hears each place while waiting)
        and hold one of the runner's places while the body runs.

        Raises EngineBusy when the queue is full, TurnCancelled when `cancel` is set while
        waiting (a running body checks `cancel` itself)."""
        self._admit()
        waiter = Turn(chat_key, share or chat_key, asyncio.get_running_loop())
        self._waiting.push(waiter.share, waiter)
        cancel.on_cancel(lambda: self._cancel_soon(waiter))
        self.dispatch()
        try:
            while (event := await waiter.events.get()) is not _GO:
                if isinstance(event, Finished):
                    raise TurnCancelled(chat_key)
                if isinstance(event, Queued) and on_place is not None:
                    await on_place(event)
            yield
        finally:
            if not waiter.ended:
                self.end(waiter, finished_now(waiter, "cancelled"))

    def requeue(self, ticket: Ticket) -> None:
        """A running request goes back to wait for another start (its server failed)."""
        self._running.discard(ticket)
        self._waiting.done(ticket.share)
        ticket.ahead = None
        self._waiting.push(ticket.share, ticket)
        self.dispatch()

    def close(self) -> None:
        """No more requests; the waiting ones end as cancelled (the runner ends its own)."""
        self.closed = True
        for ticket in self._waiting.order():
            self.end(ticket, finished_now(ticket, "cancelled"))

    def _cancel_soon(self, ticket: Waiter) -> None:
        # Cancel tokens may be set from any thread (Ctrl+C, a worker): act on the loop's.
        try:
            ticket.loop.call_soon_threadsafe(self._cancelled, ticket)
        except RuntimeError:  # the loop is closed: nothing waits for this request any more
            pass

    def _cancelled(self, ticket: Waiter) -> None:
        if ticket.ended:
            return
        if ticket in self._running:
            if isinstance(ticket, Ticket):  # a running turn's holder checks its token itself
                self._runner.stop(ticket)
        else:
            self.end(ticket, finished_now(ticket, "cancelled"))


def finished_now(
    ticket: Waiter, reason: StopReason, *, text: str | None = None, n_prompt_tokens: int = 0,
    n_evaluated: int = 0, n_generated: int = 0,
) -> Finished:
    """The `Finished` event of a request ending now (with the text delivered so far unless
    `text` is given)."""
    delivered = ticket.text if isinstance(ticket, Ticket) else ""
    return Finished(
        reason=reason, text=delivered if text is None else text,
        n_prompt_tokens=n_prompt_tokens, n_evaluated=n_evaluated, n_generated=n_generated,
        seconds=time.monotonic() - ticket.started if isinstance(ticket, Ticket) else 0.0,
    )
