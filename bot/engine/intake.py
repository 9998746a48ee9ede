"""Request intake and delivery, shared by the engines: the queue bound, the hand-over of requests
to the worker thread, and the events sent back to each request's event loop.

As in llama.cpp's server (`server_queue` in, `server_response` out), the worker thread that
decodes never touches asyncio: it takes `Ticket`s from `Intake.take`, reports with `emit` and
`tell_places`, and ends each request exactly once with `end` (a `Finished` or an exception),
which also frees its place in the queue bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bot.engine.base import (
    Finished,
    GenerationEvent,
    GenerationRequest,
    Queued,
    StopReason,
    TextDelta,
)
from bot.errors import EngineBusy, ModelError
from bot.i18n import _

log = logging.getLogger(__name__)

DELIVERY_INTERVAL = 0.05
"""Seconds a piece of reply text may wait to be sent with the next ones.

Waking the event loop for every token costs the decoding threads more than the event loop's
own work: on a machine with as many cores as llama.cpp threads it takes a core from them and
holds the GIL the worker needs back after each decode. A reader cannot tell text 50 ms late;
the first text of a reply, its end, errors and queue places are sent at once.
"""

Outcome = Finished | BaseException
_SHUTDOWN = object()


@dataclass(eq=False)
class Ticket:
    """One accepted request, as the worker thread holds it until it ends."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)
    started: float = field(default_factory=time.monotonic)
    ahead: int | None = None
    sent_text: bool = False
    ended: bool = False

    @property
    def chat_key(self) -> str:
        return self.request.chat_key


@dataclass(eq=False)
class _Call:
    """Work for the worker thread between requests (`Intake.on_worker`)."""

    work: Callable[[], Any]
    result: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)

    def run(self) -> None:
        try:
            self.result.set_result(self.work())
        except BaseException as exc:  # handed to the caller, who raises it
            self.result.set_exception(exc)


def _deliver(items: list[tuple[Ticket, GenerationEvent | BaseException]]) -> None:
    """On the event loop: put one batch of events into their requests' queues."""
    for ticket, event in items:
        ticket.events.put_nowait(event)


class Intake:
    """The bounded way in and the batched way out of an engine's worker thread."""

    def __init__(self, *, max_queue: int, one_at_a_time: bool = False) -> None:
        """`max_queue` requests at most may be running and waiting. With `one_at_a_time` (the
        worker serves requests one by one in arrival order) a newcomer is told its place at
        once: the requests accepted before it, all of which start first."""
        self._max_queue = max_queue
        self._one_at_a_time = one_at_a_time
        self._pending = 0
        self._lock = threading.Lock()
        self._inbox: queue.Queue[object] = queue.Queue()
        self._outbox: list[tuple[Ticket, GenerationEvent | BaseException]] = []
        self._urgent = False
        self._since = 0.0
        self.closed = False

    @property
    def pending(self) -> int:
        """Requests accepted and not ended (running and waiting)."""
        return self._pending

    # -- on the event loop ------------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Hand `request` to the worker and yield its events up to `Finished`.

        Raises EngineBusy when the queue is full, and whatever the worker ended it with.
        Leaving early (the consumer stopped reading) cancels the request.
        """
        if self.closed:
            raise ModelError("the model was unloaded")
        with self._lock:
            if self._pending >= self._max_queue:
                raise EngineBusy(_(
                    "The model is busy with {count} requests; try again in a minute.",
                    count=self._pending,
                ))
            ahead = self._pending
            self._pending += 1
        ticket = Ticket(request, asyncio.get_running_loop())
        if self._one_at_a_time and ahead:
            # The worker may be evaluating a long prompt and not look at its inbox for a while.
            ticket.ahead = ahead
            ticket.events.put_nowait(Queued(ahead))
        self._inbox.put(ticket)
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

    async def on_worker(self, work: Callable[[], Any]) -> Any:
        """Run `work` on the worker thread between requests (it may edit what the worker owns,
        such as a chat's cache) and return its result. Raises ModelError once closing."""
        if self.closed:
            raise ModelError("the model was unloaded")
        call = _Call(work)
        self._inbox.put(call)
        return await asyncio.wrap_future(call.result)

    def close(self) -> None:
        """No more requests; the worker's next `take` returns None."""
        self.closed = True
        self._inbox.put(_SHUTDOWN)

    # -- on the worker thread ---------------------------------------------------------------

    def take(self, *, block: bool) -> list[Ticket] | None:
        """New requests (waiting for one if `block`); None once the engine is closing."""
        taken: list[Ticket] = []
        while True:
            try:
                item = self._inbox.get(block=block and not taken)
            except queue.Empty:
                return taken
            if item is _SHUTDOWN:
                for ticket in taken:
                    self.end(ticket, _cancelled(ticket))
                return None
            if isinstance(item, _Call):
                item.run()
                continue
            assert isinstance(item, Ticket)
            taken.append(item)

    def drain(self) -> None:
        """At shutdown: end every request still in the inbox as cancelled (and run the calls
        that came with them, before the pool saves its chats' states)."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Ticket):
                self.end(item, _cancelled(item))
            elif isinstance(item, _Call):
                item.run()

    def emit(self, ticket: Ticket, event: TextDelta) -> None:
        """A piece of reply text (the first of a reply goes out at once)."""
        if not ticket.sent_text:
            ticket.sent_text = True
            self._urgent = True
        self._put(ticket, event)

    def tell_places(self, waiting: Iterable[Ticket]) -> None:
        """The waiting requests, in the order they will start: each hears its place when it
        changes (1 for the first, which waits for the requests running now)."""
        for ahead, ticket in enumerate(waiting, start=1):
            if ticket.ahead != ahead:
                ticket.ahead = ahead
                self._urgent = True
                self._put(ticket, Queued(ahead))

    def end(self, ticket: Ticket, outcome: Outcome) -> None:
        """The one way a request ends: its outcome goes out, its place in the bound is freed."""
        if ticket.ended:
            raise RuntimeError(f"a request of chat {ticket.chat_key} ended twice")
        ticket.ended = True
        with self._lock:
            self._pending -= 1
        self._urgent = True
        self._put(ticket, outcome)

    def send(self, *, force: bool = False) -> None:
        """Hand waiting events to their event loops, one wake-up per loop (see DELIVERY_INTERVAL)."""
        if not self._outbox:
            return
        if not (force or self._urgent or time.monotonic() - self._since >= DELIVERY_INTERVAL):
            return
        outbox, self._outbox = self._outbox, []
        self._urgent = False
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Ticket, GenerationEvent | BaseException]]] = {}
        for item in outbox:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop was closed: nobody is listening any more
                log.debug("dropped %d events for a closed event loop", len(items))

    def _put(self, ticket: Ticket, event: GenerationEvent | BaseException) -> None:
        if not self._outbox:
            self._since = time.monotonic()
        self._outbox.append((ticket, event))


def _cancelled(ticket: Ticket) -> Finished:
    return finished_now(ticket, "cancelled")


def finished_now(
    ticket: Ticket, reason: StopReason, *, text: str = "", n_prompt_tokens: int = 0,
    n_evaluated: int = 0, n_generated: int = 0,
) -> Finished:
    """The `Finished` event of a request ending now."""
    return Finished(
        reason=reason,
        text=text, n_prompt_tokens=n_prompt_tokens, n_evaluated=n_evaluated,
        n_generated=n_generated, seconds=time.monotonic() - ticket.started,
    )
