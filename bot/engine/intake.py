"""The hand-over between a local engine's `RequestQueue` (event loop) and its worker thread.

As in llama.cpp's server (`server_queue` in, `server_response` out), the worker thread that
decodes never touches asyncio: it takes the `Ticket`s the queue started from `Intake.take`,
reports with `emit`, and ends each request exactly once with `end` (a `Finished` or an
exception). Its events go back to the event loop in batches, where the `RequestQueue` delivers
them and ends the request (which lets the next one start).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.engine.base import TextDelta
from bot.engine.requests import Outcome, RequestQueue, Ticket, finished_now
from bot.errors import ModelError

log = logging.getLogger(__name__)

DELIVERY_INTERVAL = 0.05
"""Seconds a piece of reply text may wait to be sent with the next ones.

Waking the event loop for every token costs the decoding threads more than the event loop's
own work: on a machine with as many cores as llama.cpp threads it takes a core from them and
holds the GIL the worker needs back after each decode. A reader cannot tell text 50 ms late;
the first text of a reply, its end and errors are sent at once.
"""

_SHUTDOWN = object()


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


class Intake:
    """A worker thread's way in and batched way out; the `Runner` of a local engine's
    `RequestQueue` (`requests`), which starts at most `capacity` requests at once."""

    def __init__(self, *, max_queue: int, capacity: int) -> None:
        self._capacity = capacity
        self._inbox: queue.Queue[object] = queue.Queue()
        self._outbox: list[tuple[Ticket, TextDelta | Outcome]] = []
        self._urgent = False
        self._since = 0.0
        self.requests = RequestQueue(max_queue=max_queue, runner=self)

    @property
    def closed(self) -> bool:
        return self.requests.closed

    # -- the Runner, on the event loop ------------------------------------------------------

    def can_start(self, running: int) -> bool:
        return running < self._capacity

    def start(self, ticket: Ticket) -> None:
        self._inbox.put(ticket)

    def stop(self, ticket: Ticket) -> None:
        """Nothing to do here: the worker reads the cancel token between tokens (and before
        it starts a request it took)."""

    @property
    def stalled(self) -> bool:
        return False

    async def on_worker(self, work: Callable[[], Any]) -> Any:
        """Run `work` on the worker thread between requests (it may edit what the worker owns,
        such as a chat's cache) and return its result. Raises ModelError once closing."""
        if self.closed:
            raise ModelError("the model was unloaded")
        call = _Call(work)
        self._inbox.put(call)
        return await asyncio.wrap_future(call.result)

    def close(self) -> None:
        """No more requests: the waiting ones end now, the worker's next `take` returns None."""
        self.requests.close()
        self._inbox.put(_SHUTDOWN)

    def _deliver(self, items: list[tuple[Ticket, TextDelta | Outcome]]) -> None:
        """On the event loop: one batch of the worker's events to their requests."""
        for ticket, event in items:
            if isinstance(event, TextDelta):
                self.requests.deliver(ticket, event)
            else:
                self.requests.end(ticket, event)

    # -- on the worker thread ---------------------------------------------------------------

    def take(self, *, block: bool) -> list[Ticket] | None:
        """Requests started (waiting for one if `block`); None once the engine is closing."""
        taken: list[Ticket] = []
        while True:
            try:
                item = self._inbox.get(block=block and not taken)
            except queue.Empty:
                return taken
            if item is _SHUTDOWN:
                for ticket in taken:
                    self.end(ticket, finished_now(ticket, "cancelled", text=""))
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
                self.end(item, finished_now(item, "cancelled", text=""))
            elif isinstance(item, _Call):
                item.run()

    def emit(self, ticket: Ticket, event: TextDelta) -> None:
        """A piece of reply text (the first of a reply goes out at once)."""
        if not ticket.sent_text:
            ticket.sent_text = True
            self._urgent = True
        self._put(ticket, event)

    def end(self, ticket: Ticket, outcome: Outcome) -> None:
        """The worker's one way to end a request: its outcome goes out at the next `send`."""
        if ticket.worker_ended:
            raise RuntimeError(f"a request of chat {ticket.chat_key} ended twice")
        ticket.worker_ended = True
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
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Ticket, TextDelta | Outcome]]] = {}
        for item in outbox:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._deliver, items)
            except RuntimeError:  # the loop was closed: nobody is listening any more
                log.debug("dropped %d events for a closed event loop", len(items))

    def _put(self, ticket: Ticket, event: TextDelta | Outcome) -> None:
        if not self._outbox:
            self._since = time.monotonic()
        self._outbox.append((ticket, event))
