"""The remote engine: the `Engine` seam in front of inference servers (`llama-server`s and
OpenAI-compatible ones) instead of a model in this process.

Requests wait in our own bounded queue, fair between chats (`FairQueue`), and start when a
server has a slot free; each chat sticks to its slot (`Placement`) so the server's cache of it
serves the follow-up. A server that refuses connections, goes silent or answers 5xx is marked
down and checked with backoff until healthy; its chats move to the others, and a reply it was
writing is written elsewhere: continued from the tokens already streamed on a `llama-server`,
started over (`Restarted`) on an OpenAI one. While every server is down requests wait
(`Queued(stalled=True)`) and are answered when one is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bot.core.prompt import Prompt, prompt_text
from bot.engine.base import (
    Finished,
    GenerationEvent,
    GenerationRequest,
    MemoryReport,
    ModelInfo,
    Queued,
    Restarted,
    ServerStatus,
    SlotReport,
    StatusListener,
    StopReason,
    TextDelta,
)
from bot.engine.remote.http import ServerConnection
from bot.engine.remote.llamacpp import LlamaServer
from bot.engine.remote.openai import OPENAI_KNOBS, OpenAIServer, TokenEstimate, messages_of
from bot.engine.remote.placement import Claim, Placement
from bot.engine.remote.spec import BackendSpec
from bot.engine.remote.streams import Done, Piece, ServerFacts
from bot.engine.scheduler import FairQueue
from bot.errors import BackendDown, BackendError, EngineBusy, ModelError
from bot.i18n import _

log = logging.getLogger(__name__)

CANCEL_CHECK = 0.1
"""Seconds between looks at the cancel tokens of requests (a /stop ends a stream this soon)."""
FIRST_RETRY = 0.5
LAST_RETRY = 15.0
"""Health checks of a server that is down: after FIRST_RETRY seconds, doubling up to LAST_RETRY."""


@dataclass(frozen=True, kw_only=True)
class RemoteOptions:
    backends: tuple[BackendSpec, ...]
    max_queue: int = 32
    max_ctx: int = 2048
    """No chat's window is larger, whatever the servers allow."""
    timeout: float = 60.0
    """Seconds a server may stay silent (no byte of a reply, no answer) before it counts as
    down; `llama-server` sends a comment every few seconds while it evaluates a prompt."""
    connect_wait: float = 60.0
    """At start, how long to wait for a first server to answer."""
    patrol: float = 10.0
    """Seconds between health checks of the servers that are up and idle."""


class _Backend:
    def __init__(self, index: int, spec: BackendSpec, client: httpx.AsyncClient) -> None:
        self.index = index
        self.spec = spec
        connection = ServerConnection(
            client, spec.url, spec.api_key.get_secret_value() if spec.api_key else None
        )
        self.server: LlamaServer | OpenAIServer = (
            LlamaServer(connection) if spec.kind == "llama.cpp" else OpenAIServer(connection, spec)
        )
        self.facts: ServerFacts | None = None
        self.up = False
        self.reason = "not checked yet"
        self.since = time.monotonic()
        self.watch: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Job:
    request: GenerationRequest
    events: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    ahead: int | None = None
    stalled: bool = False
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    """Token ids of the reply so far (from a `llama-server`), to continue it elsewhere."""
    evaluated: int = 0
    ended: bool = False

    @property
    def chat_key(self) -> str:
        return self.request.chat_key


class RemoteEngine:
    """Replies written by inference servers; see the module's docstring."""

    def __init__(self, options: RemoteOptions) -> None:
        self._options = options
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(options.timeout, connect=min(5.0, options.timeout)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._backends = [_Backend(i, spec, self._client) for i, spec in enumerate(options.backends)]
        self._placement = Placement()
        for backend in self._backends:
            self._placement.add_server(backend.index, weight=backend.spec.weight)
        self._queue: FairQueue[_Job] = FairQueue()
        self._running: set[_Job] = set()
        self._pending = 0
        self._saved: dict[str, int] = {}
        """Chats whose slot cache a server saved to its disk: chat -> server index."""
        self._estimate = TokenEstimate()
        self._listeners: list[StatusListener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._info: ModelInfo | None = None
        self.closed = False

    # -- start and stop ---------------------------------------------------------------------

    @classmethod
    async def connect(cls, options: RemoteOptions) -> RemoteEngine:
        """Reach the servers (waiting up to `connect_wait` for a first one) and learn the model
        from them; raises ModelError when none answers."""
        engine = cls(options)
        try:
            await engine._start()
        except BaseException:
            await engine.aclose()
            raise
        return engine

    async def _start(self) -> None:
        deadline = time.monotonic() + self._options.connect_wait
        delay = FIRST_RETRY
        while True:
            await asyncio.gather(*(self._check(b) for b in self._backends if not b.up))
            if any(b.up for b in self._backends) or time.monotonic() >= deadline:
                break
            if delay == FIRST_RETRY:  # said once, so that a start waiting is not a silent one
                log.warning("no model server answers yet (%s); waiting up to %.0f s for one",
                            self._problems(), self._options.connect_wait)
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, LAST_RETRY)
        if not any(b.up for b in self._backends):
            raise ModelError(f"no model server answered within {self._options.connect_wait:.0f} s "
                             f"({self._problems()})")
        self._info = self._model_info()
        for backend in self._backends:
            if backend.up:
                log.info("model server %s (%s) is up: %s, %d slots of %d tokens", backend.spec.url,
                         backend.spec.kind, backend.facts.model if backend.facts else "?",
                         backend.facts.slots if backend.facts else 0,
                         backend.facts.n_ctx if backend.facts else 0)
            else:
                log.warning("model server %s is down (%s); checking it until it answers",
                            backend.spec.url, backend.reason)
                self._watch(backend)
        self._spawn(self._check_cancels())
        self._spawn(self._patrol())

    def _problems(self) -> str:
        return "; ".join(f"{b.spec.url}: {b.reason}" for b in self._backends if not b.up)

    async def aclose(self) -> None:
        """Cancel the replies in flight and waiting, stop the health checks, close the client."""
        if self.closed:
            return
        self.closed = True
        for job in list(self._queue.order()):
            self._queue.remove(job)
            self._end(job, self._finished(job, "cancelled"))
        for job in list(self._running):
            if job.task is not None:
                job.task.cancel()
        running = [job.task for job in self._running if job.task is not None]
        await asyncio.gather(*running, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for backend in self._backends:
            if backend.watch is not None:
                backend.watch.cancel()
        await self._client.aclose()

    # -- the Engine protocol ----------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise ModelError("the remote engine is not connected")
        return self._info

    @property
    def queued(self) -> int:
        """Requests accepted and not finished (running and waiting)."""
        return self._pending

    async def count_tokens(self, prompt: Prompt) -> int:
        """The prompt's tokens by a `llama-server`'s tokenizer; the calibrated estimate when
        only OpenAI servers are up (they have no tokenizer endpoint)."""
        for backend in self._backends:
            if backend.up and isinstance(backend.server, LlamaServer):
                try:
                    return len(await backend.server.tokens.prompt(prompt))
                except BackendDown as exc:
                    await self._down(backend, str(exc))
        return self._estimate(prompt)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if self.closed:
            raise ModelError("the remote engine was closed")
        if self._pending >= self._options.max_queue:
            raise EngineBusy(_(
                "The model is busy with {count} requests; try again in a minute.",
                count=self._pending,
            ))
        job = _Job(request)
        self._pending += 1
        self._queue.push(request.chat_key, job)
        self._dispatch()
        finished = False
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    finished = True
                    return
        finally:
            if not finished:
                request.cancel.cancel()
                if job in self._queue:
                    self._queue.remove(job)
                    self._end(job, self._finished(job, "cancelled"))
                elif job.task is not None:
                    job.task.cancel()

    def memory_report(self) -> MemoryReport:
        slots = tuple(
            SlotReport(seq_id=number, chat_key=owner, state="busy" if busy else "idle",
                       tokens=0, kv_bytes=0)
            for _, number, owner, busy in self._placement.slots()
        )
        return MemoryReport(kv_type="remote", kv_bytes_allocated=0, kv_bytes_used=0, slots=slots,
                            servers=tuple(self.describe_servers()))

    # -- what the chat side may ask besides -------------------------------------------------

    async def forget(self, chat_key: str) -> None:
        """Erase the chat's idle slot on its `llama-server` and stop restoring its saved cache
        (the server's slot files are the server's: nothing else is deleted)."""
        self._saved.pop(chat_key, None)
        # Held busy while it is erased, so no other chat is given (or saves) it meanwhile.
        claim = self._placement.take(chat_key) if self._placement.home(chat_key) else None
        if claim is None:
            return  # no slot, or a reply of the chat is being written on it
        try:
            server = self._backends[claim.backend].server
            if isinstance(server, LlamaServer):
                await server.erase_slot(claim.slot)
        finally:
            self._placement.give_up(chat_key)
            self._dispatch()

    def add_listener(self, listener: StatusListener) -> None:
        """Call `listener` whenever a server goes down or comes back."""
        self._listeners.append(listener)

    def describe_servers(self) -> list[str]:
        """A line per server: URL, kind, model, state, slots held."""
        lines = []
        held: dict[int, int] = {}
        for index, _slot, owner, _busy in self._placement.slots():
            held[index] = held.get(index, 0) + (owner is not None)
        for backend in self._backends:
            facts = backend.facts
            model = Path(facts.model).name if facts else "?"
            if backend.up and facts is not None:
                lines.append(_("{url} ({kind}, {model}): up, {held}/{slots} slots hold chats",
                               url=backend.spec.url, kind=backend.spec.kind, model=model,
                               held=held.get(backend.index, 0), slots=facts.slots))
            else:
                lines.append(_("{url} ({kind}, {model}): down for {seconds} s: {reason}",
                               url=backend.spec.url, kind=backend.spec.kind, model=model,
                               seconds=f"{time.monotonic() - backend.since:.0f}",
                               reason=backend.reason))
        return lines

    def served_models(self) -> list[tuple[str, bool, tuple[str, ...]]]:
        """(server URL, up, the models it serves) for every server."""
        return [(b.spec.url, b.up, b.facts.models if b.facts else ()) for b in self._backends]

    @property
    def servers_up(self) -> int:
        return sum(1 for backend in self._backends if backend.up)

    # -- scheduling -------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start waiting requests while a server has a slot free; tell the rest their places."""
        while not self.closed and self._placement.can_start():
            popped = self._queue.pop()
            if popped is None:
                break
            chat_key, job = popped
            claim = self._placement.take(chat_key, prefer=self._saved.get(chat_key))
            if claim is None:  # cannot happen while can_start(): put it back to be safe
                self._queue.done(chat_key)
                self._queue.push(chat_key, job)
                break
            self._running.add(job)
            job.task = asyncio.create_task(self._run(job, claim))
        stalled = not self._placement.any_up()
        for ahead, job in enumerate(self._queue.order(), start=1):
            if (job.ahead, job.stalled) != (ahead, stalled):
                job.ahead, job.stalled = ahead, stalled
                job.events.put_nowait(Queued(ahead, stalled=stalled))

    async def _run(self, job: _Job, claim: Claim) -> None:
        backend = self._backends[claim.backend]
        again = False
        try:
            done = await self._write(job, backend, claim)
            self._end(job, Finished(
                reason=done.reason, text=job.text, n_prompt_tokens=done.n_prompt_tokens,
                n_evaluated=job.evaluated, n_generated=done.n_generated,
                seconds=time.monotonic() - job.started,
            ))
        except asyncio.CancelledError:
            self._end(job, self._finished(job, "cancelled"))
        except BackendDown as exc:
            log.warning("reply to chat %s failed on %s: %s", job.chat_key, backend.spec.url, exc)
            await self._down(backend, str(exc))
            again = not job.request.cancel.cancelled and not self.closed
            if not again:
                self._end(job, self._finished(job, "cancelled"))
        except Exception as exc:
            log.warning("reply to chat %s refused by %s: %s", job.chat_key, backend.spec.url, exc)
            self._end(job, exc if isinstance(exc, ModelError) else ModelError(str(exc)))
        finally:
            self._running.discard(job)
            self._placement.release(job.chat_key)
            self._queue.done(job.chat_key)
            if again:
                self._queue.push(job.chat_key, job)
            self._dispatch()

    async def _write(self, job: _Job, backend: _Backend, claim: Claim) -> Done:
        """Stream the reply from one server; what was streamed before (on a server that
        failed) is continued or, where it cannot be, started over."""
        request = job.request
        facts = backend.facts
        assert facts is not None
        server = backend.server
        if isinstance(server, LlamaServer):
            if claim.evicted is not None and await server.save_slot(claim.slot, claim.evicted):
                self._saved[claim.evicted] = backend.index
            if not claim.kept and self._saved.get(job.chat_key) == backend.index:
                restored = await server.restore_slot(claim.slot, job.chat_key)
                log.debug("chat %s: %d tokens restored into slot %d of %s", job.chat_key,
                          restored, claim.slot, backend.spec.url)
            prompt = await server.tokens.prompt(request.prompt)
            tokens = prompt + job.tokens
            left = request.sampling.n_predict - len(job.tokens)
            room = facts.n_ctx - len(tokens)
            if room <= 0 or left <= 0:
                return Done(reason="context" if room <= 0 else "length",
                            n_prompt_tokens=len(prompt), n_evaluated=0, n_generated=len(job.tokens))
            stream = server.complete(
                tokens, slot=claim.slot, sampling=request.sampling, n_predict=min(left, room),
                stop=request.stop,
            )
            done = await self._follow(job, stream)
            if done.reason == "length" and room < left:
                done = Done(reason="context", n_prompt_tokens=done.n_prompt_tokens,
                            n_evaluated=done.n_evaluated, n_generated=done.n_generated)
            return Done(reason=done.reason, n_prompt_tokens=len(prompt),
                        n_evaluated=done.n_evaluated, n_generated=len(job.tokens))
        if job.text:
            job.text, job.tokens = "", []
            job.events.put_nowait(Restarted())
        estimate = self._estimate(request.prompt)
        messages = messages_of(request.system, request.turns) if request.turns else [
            {"role": "user", "content": prompt_text(request.prompt)}]
        done = await self._follow(job, server.chat(
            messages, sampling=request.sampling,
            n_predict=min(request.sampling.n_predict, max(1, facts.n_ctx - estimate)),
            prompt_estimate=0,
        ))
        if done.n_prompt_tokens:
            self._estimate.observe(request.prompt, done.n_prompt_tokens)
            return done
        return Done(reason=done.reason, n_prompt_tokens=estimate, n_evaluated=estimate,
                    n_generated=done.n_generated)

    async def _follow(self, job: _Job, stream: AsyncGenerator[Piece | Done, None]) -> Done:
        """Pass a server's stream on as text; returns its end. Leaving closes the stream (and
        its connection) at once, which tells the server to stop."""
        async with contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, Done):
                    job.evaluated += item.n_evaluated
                    return item
                if job.request.cancel.cancelled:
                    raise asyncio.CancelledError
                job.tokens.extend(item.tokens)
                if item.text:
                    job.text += item.text
                    job.events.put_nowait(TextDelta(item.text))
        raise BackendDown("the stream ended without its last event")

    def _end(self, job: _Job, outcome: Finished | BaseException) -> None:
        if job.ended:
            return
        job.ended = True
        self._pending -= 1
        job.events.put_nowait(outcome)

    def _finished(self, job: _Job, reason: StopReason) -> Finished:
        return Finished(reason=reason, text=job.text, n_prompt_tokens=0, n_evaluated=job.evaluated,
                        n_generated=len(job.tokens), seconds=time.monotonic() - job.started)

    # -- health -------------------------------------------------------------------------------

    async def _check(self, backend: _Backend) -> bool:
        """Ask a server for its facts; it is up if it answers."""
        try:
            facts = await backend.server.facts()
        except (BackendError, ModelError, httpx.HTTPError) as exc:
            backend.reason = str(exc)
            return False
        if self._info is not None and facts.n_ctx < self._info.n_ctx:
            log.warning("model server %s has slots of %d tokens, fewer than the %d the others have:"
                        " long chats may not fit there", backend.spec.url, facts.n_ctx,
                        self._info.n_ctx)
        backend.facts = facts
        backend.up = True
        backend.reason = ""
        backend.since = time.monotonic()
        self._placement.server_up(backend.index, slots=facts.slots)
        return True

    async def _down(self, backend: _Backend, reason: str) -> None:
        if not backend.up:
            return
        backend.up = False
        backend.reason = reason
        backend.since = time.monotonic()
        moved = self._placement.server_down(backend.index)
        up = self.servers_up
        if up:
            log.warning("model server %s is down (%s); %d chats move to the other servers",
                        backend.spec.url, reason, len(moved))
        else:
            log.error("every model server is down (the last, %s: %s); replies wait until one is "
                      "back", backend.spec.url, reason)
        self._watch(backend)
        await self._tell(ServerStatus(backend.spec.url, False, reason, up, len(self._backends)))
        self._dispatch()

    def _watch(self, backend: _Backend) -> None:
        if backend.watch is None or backend.watch.done():
            backend.watch = asyncio.create_task(self._until_up(backend))

    async def _until_up(self, backend: _Backend) -> None:
        delay = FIRST_RETRY
        while not self.closed:
            await asyncio.sleep(delay)
            if await self._check(backend):
                log.info("model server %s is back (%d slots)", backend.spec.url,
                         backend.facts.slots if backend.facts else 0)
                await self._tell(ServerStatus(backend.spec.url, True, "", self.servers_up,
                                               len(self._backends)))
                self._dispatch()
                return
            delay = min(delay * 2, LAST_RETRY)

    async def _patrol(self) -> None:
        """Check idle servers now and then, so one that died between replies is known down
        before a chat is sent to it."""
        while not self.closed:
            await asyncio.sleep(self._options.patrol)
            busy = {index for index, _, _, is_busy in self._placement.slots() if is_busy}
            for backend in self._backends:
                if backend.up and backend.index not in busy:
                    try:
                        await backend.server.health()
                    except (BackendError, httpx.HTTPError) as exc:
                        await self._down(backend, str(exc))

    async def _check_cancels(self) -> None:
        while not self.closed:
            await asyncio.sleep(CANCEL_CHECK)
            for job in self._queue.order():
                if job.request.cancel.cancelled:
                    self._queue.remove(job)
                    self._end(job, self._finished(job, "cancelled"))
            for job in list(self._running):
                if job.request.cancel.cancelled and job.task is not None and not job.task.done():
                    job.task.cancel()

    async def _tell(self, status: ServerStatus) -> None:
        for listener in self._listeners:
            try:
                await listener(status)
            except Exception:
                log.exception("a listener of model server changes failed")

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the model the servers serve --------------------------------------------------------

    def _model_info(self) -> ModelInfo:
        up = [b for b in self._backends if b.up and b.facts is not None]
        first = next((b for b in up if b.spec.kind == "llama.cpp"), up[0])
        facts = first.facts
        assert facts is not None
        n_ctx = min([self._options.max_ctx, *(b.facts.n_ctx for b in up if b.facts)])
        every_knob = all(b.spec.kind == "llama.cpp" for b in self._backends)
        return ModelInfo(
            path=Path(facts.model), name=Path(facts.model).stem or facts.model,
            n_ctx_train=max(facts.n_ctx_train, n_ctx), n_ctx=n_ctx,
            chat_template=facts.chat_template, bos_token=facts.bos_token,
            eos_token=facts.eos_token, file_type="remote",
            knobs=None if every_knob else OPENAI_KNOBS,
        )
