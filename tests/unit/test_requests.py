"""The one request path of every engine (`RequestQueue`) and the local engines' hand-over to
their worker thread (`Intake`), without a model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from bot.core.prompt import Segment
from bot.engine.base import (
    CancelToken,
    Finished,
    GenerationEvent,
    GenerationRequest,
    Queued,
    Restarted,
    SamplingParams,
    TextDelta,
)
from bot.engine.intake import Intake
from bot.engine.requests import RequestQueue, Ticket, TurnCancelled, finished_now
from bot.errors import EngineBusy


def hello(chat_key: str, *, share: str | None = None) -> GenerationRequest:
    return GenerationRequest(chat_key=chat_key, prompt=(Segment("hello", False),),
                             sampling=SamplingParams(n_predict=4), share=share)


class Runner:
    """Runs `slots` requests at once and records what the queue asks of it."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.started: list[Ticket] = []
        self.stopped: list[Ticket] = []
        self.stalled = False

    def can_start(self, running: int) -> bool:
        return running < self.slots

    def start(self, ticket: Ticket) -> None:
        self.started.append(ticket)

    def stop(self, ticket: Ticket) -> None:
        self.stopped.append(ticket)


def reader(queue: RequestQueue, request: GenerationRequest) -> tuple[
        AsyncIterator[GenerationEvent], asyncio.Future[GenerationEvent]]:
    stream = queue.stream(request)
    return stream, asyncio.ensure_future(anext(stream))


def test_a_cancel_token_calls_back_once_from_any_thread() -> None:
    token = CancelToken()
    calls: list[str] = []
    token.on_cancel(lambda: calls.append("first"))
    thread = threading.Thread(target=token.cancel)
    thread.start()
    thread.join()
    token.cancel()
    token.on_cancel(lambda: calls.append("late"))  # already cancelled: called at once
    assert token.cancelled and calls == ["first", "late"]


async def test_the_bound_counts_running_and_waiting_and_a_request_ends_once() -> None:
    runner = Runner(slots=1)
    queue = RequestQueue(max_queue=2, runner=runner)
    stream, first = reader(queue, hello("a"))
    _, second = reader(queue, hello("b"))
    await asyncio.sleep(0)
    assert [t.chat_key for t in runner.started] == ["a"] and queue.pending == 2
    assert await second == Queued(1)
    with pytest.raises(EngineBusy, match="busy with 2 requests"):
        await anext(queue.stream(hello("c")))
    (ticket,) = runner.started
    queue.deliver(ticket, TextDelta("hel"))
    queue.end(ticket, finished_now(ticket, "eos"))
    with pytest.raises(RuntimeError, match="ended twice"):
        queue.end(ticket, finished_now(ticket, "cancelled"))
    assert await first == TextDelta("hel")
    done = await anext(stream)
    assert isinstance(done, Finished) and done.text == "hel"  # the text delivered so far
    assert [t.chat_key for t in runner.started] == ["a", "b"]  # the end started the next
    assert queue.pending == 1


async def test_chats_take_turns_and_hear_their_places_when_they_change() -> None:
    runner = Runner(slots=1)
    queue = RequestQueue(max_queue=8, runner=runner)
    streams = [reader(queue, hello(key)) for key in ("a", "a", "b")]
    pending = [future for _, future in streams]
    await asyncio.sleep(0)
    assert [await pending[1], await pending[2]] == [Queued(1), Queued(1)]
    # "b" has started nothing yet: it goes before a's second request, which hears it.
    assert await anext(streams[1][0]) == Queued(2)
    running = runner.started[0]
    queue.end(running, finished_now(running, "eos"))
    assert [t.chat_key for t in runner.started] == ["a", "b"]
    assert isinstance(await pending[0], Finished)


async def test_topics_of_one_chat_share_one_turn() -> None:
    runner = Runner(slots=2)
    queue = RequestQueue(max_queue=8, runner=runner)
    for key in ("topic1", "topic2"):
        reader(queue, hello(key, share="forum"))
    reader(queue, hello("private"))
    await asyncio.sleep(0)
    # Two slots, but the forum's topics take one share: the private chat goes before topic2.
    assert [t.chat_key for t in runner.started] == ["topic1", "private"]


async def test_cancelling_a_waiting_request_ends_it_at_once() -> None:
    runner = Runner(slots=1)
    queue = RequestQueue(max_queue=8, runner=runner)
    reader(queue, hello("a"))
    waiting = hello("b")
    _, place = reader(queue, waiting)
    await asyncio.sleep(0)
    assert await place == Queued(1)
    stream = queue.stream(hello("c"))
    third = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    waiting.cancel.cancel()
    await asyncio.sleep(0)  # the callback runs on the loop; no timer is involved
    assert queue.pending == 2 and runner.stopped == []
    assert await third == Queued(2)
    assert await anext(stream) == Queued(1)  # c moved up when b left


async def test_cancelling_a_running_request_asks_the_runner_and_a_reader_leaving_cancels() -> None:
    runner = Runner(slots=2)
    queue = RequestQueue(max_queue=8, runner=runner)
    request = hello("a")
    stream, first = reader(queue, request)
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await stream.aclose()  # the reader stopped listening
    await asyncio.sleep(0)
    assert request.cancel.cancelled and runner.stopped == runner.started
    ticket = runner.started[0]
    queue.end(ticket, finished_now(ticket, "cancelled"))
    assert queue.pending == 0


async def test_a_requeued_request_waits_its_turn_again_and_hears_when_all_are_stalled() -> None:
    runner = Runner(slots=1)
    queue = RequestQueue(max_queue=8, runner=runner)
    stream, first = reader(queue, hello("a"))
    await asyncio.sleep(0)
    (ticket,) = runner.started
    queue.deliver(ticket, TextDelta("par"))
    runner.slots, runner.stalled = 0, True  # its server failed and none is up
    queue.requeue(ticket)
    assert await first == TextDelta("par")
    assert await anext(stream) == Queued(1, stalled=True)
    runner.slots, runner.stalled = 1, False
    queue.dispatch()
    assert runner.started == [ticket, ticket] and queue.pending == 1
    queue.deliver(ticket, Restarted())
    queue.end(ticket, finished_now(ticket, "eos"))
    assert await anext(stream) == Restarted()
    done = await anext(stream)
    assert isinstance(done, Finished) and done.text == ""


async def test_closing_ends_the_waiting_requests_and_refuses_new_ones() -> None:
    runner = Runner(slots=1)
    queue = RequestQueue(max_queue=8, runner=runner)
    reader(queue, hello("a"))
    _, waiting = reader(queue, hello("b"))
    await asyncio.sleep(0)
    assert await waiting == Queued(1)
    queue.close()
    assert queue.pending == 1  # the running one is the runner's to end
    with pytest.raises(Exception, match="unloaded"):
        await anext(queue.stream(hello("c")))


# -- other CPU work taking turns with the replies -------------------------------------------


async def test_other_work_waits_its_fair_turn_and_holds_a_place_while_it_runs() -> None:
    runner = Runner(slots=1)
    queue = RequestQueue(max_queue=8, runner=runner)
    reader(queue, hello("a"))
    await asyncio.sleep(0)
    places: list[Queued] = []
    ran = asyncio.Event()

    async def heard(place: Queued) -> None:
        places.append(place)

    async def transcribe() -> None:
        async with queue.turn(chat_key="b", cancel=CancelToken(), on_place=heard):
            ran.set()
            await asyncio.sleep(0.01)
            assert queue.running == 1 and runner.started == [running]  # holds the one place

    running = runner.started[0]
    work = asyncio.ensure_future(transcribe())
    _, third = reader(queue, hello("c"))
    await asyncio.sleep(0)
    assert places == [Queued(1)] and await third == Queued(2) and not ran.is_set()
    queue.end(running, finished_now(running, "eos"))
    await work
    assert ran.is_set() and [t.chat_key for t in runner.started] == ["a", "c"]
    assert queue.pending == 1


async def test_other_work_cancelled_while_waiting_leaves_the_queue() -> None:
    queue = RequestQueue(max_queue=8, runner=Runner(slots=0))
    cancel = CancelToken()

    async def transcribe() -> None:
        async with queue.turn(chat_key="b", cancel=cancel):
            raise AssertionError("it never runs")

    work = asyncio.ensure_future(transcribe())
    await asyncio.sleep(0)
    assert queue.pending == 1
    cancel.cancel()
    with pytest.raises(TurnCancelled):
        await work
    assert queue.pending == 0


# -- the worker thread's side -----------------------------------------------------------------


async def test_the_worker_takes_what_was_started_and_its_events_come_back_in_batches() -> None:
    intake = Intake(max_queue=4, capacity=1)
    stream, first = reader(intake.requests, hello("a"))
    _, second = reader(intake.requests, hello("b"))
    await asyncio.sleep(0)
    taken = intake.take(block=False)
    assert taken is not None and [t.chat_key for t in taken] == ["a"]  # capacity 1
    (ticket,) = taken
    intake.emit(ticket, TextDelta("hel"))
    intake.emit(ticket, TextDelta("lo"))
    intake.end(ticket, finished_now(ticket, "eos", text="hello"))
    with pytest.raises(RuntimeError, match="ended twice"):
        intake.end(ticket, finished_now(ticket, "cancelled"))
    intake.send()
    assert await first == TextDelta("hel")
    assert await anext(stream) == TextDelta("lo")
    assert isinstance(await anext(stream), Finished)
    assert await second == Queued(1)
    taken = intake.take(block=False)  # the end reached the loop: b was started
    assert taken is not None and [t.chat_key for t in taken] == ["b"]


async def test_a_worker_failure_is_raised_to_the_reader_and_closing_stops_the_worker() -> None:
    intake = Intake(max_queue=4, capacity=2)
    _, first = reader(intake.requests, hello("a"))
    await asyncio.sleep(0)
    taken = intake.take(block=False)
    assert taken is not None
    intake.end(taken[0], ValueError("no KV slot"))
    intake.send()
    with pytest.raises(ValueError, match="no KV slot"):
        await first
    intake.close()
    assert intake.take(block=True) is None
