"""The remote engine's model servers: which are up, checked with backoff while down and now and
then while idle, where each chat's slot is (`Placement`), and who hears when one goes down or
comes back. No request handling here: that is the dispatcher's (`dispatch.py`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bot.engine.base import ModelInfo, ServerStatus, StatusListener
from bot.engine.remote.http import ServerConnection
from bot.engine.remote.llamacpp import LlamaServer
from bot.engine.remote.openai import OPENAI_KNOBS, OpenAIServer
from bot.engine.remote.placement import Placement
from bot.engine.remote.spec import BackendSpec
from bot.engine.remote.streams import ServerFacts
from bot.errors import BackendError, ModelError
from bot.i18n import _

log = logging.getLogger(__name__)

FIRST_RETRY = 0.5
LAST_RETRY = 15.0
"""Health checks of a server that is down: after FIRST_RETRY seconds, doubling up to LAST_RETRY."""


class Backend:
    """One model server: how to reach it, what it serves, and whether it answers."""

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


class Backends:
    """The servers of one remote engine and the slots its chats hold on them."""

    def __init__(self, specs: tuple[BackendSpec, ...], client: httpx.AsyncClient, *,
                 patrol: float, on_change: Callable[[], None]) -> None:
        """`on_change` is called whenever a server goes down or comes back (requests may
        start, or must hear that they wait)."""
        self.all = [Backend(i, spec, client) for i, spec in enumerate(specs)]
        self.placement = Placement()
        for backend in self.all:
            self.placement.add_server(backend.index, weight=backend.spec.weight)
        self._patrol_every = patrol
        self._on_change = on_change
        self._listeners: list[StatusListener] = []
        self._patrol: asyncio.Task[None] | None = None
        self.n_ctx = 0
        """The smallest context among the servers known when the engine started."""
        self.closed = False

    @property
    def up(self) -> int:
        return sum(1 for backend in self.all if backend.up)

    def add_listener(self, listener: StatusListener) -> None:
        self._listeners.append(listener)

    async def connect(self, wait: float) -> None:
        """Check every server, waiting up to `wait` seconds for a first to answer; then watch
        the ones down and patrol the rest. Raises ModelError when none answers."""
        deadline = time.monotonic() + wait
        delay = FIRST_RETRY
        while True:
            await asyncio.gather(*(self.check(b) for b in self.all if not b.up))
            if self.up or time.monotonic() >= deadline:
                break
            if delay == FIRST_RETRY:  # said once, so that a start waiting is not a silent one
                log.warning("no model server answers yet (%s); waiting up to %.0f s for one",
                            self.problems(), wait)
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, LAST_RETRY)
        if not self.up:
            raise ModelError(f"no model server answered within {wait:.0f} s ({self.problems()})")
        for backend in self.all:
            if backend.up and backend.facts is not None:
                facts = backend.facts
                log.info("model server %s (%s) is up: %s, %d slots of %d tokens", backend.spec.label,
                         backend.spec.kind, facts.model, facts.slots, facts.n_ctx)
            else:
                log.warning("model server %s is down (%s); checking it until it answers",
                            backend.spec.label, backend.reason)
                self._watch(backend)
        self._patrol = asyncio.create_task(self._patrol_idle())

    def problems(self) -> str:
        return "; ".join(f"{b.spec.label}: {b.reason}" for b in self.all if not b.up)

    async def aclose(self) -> None:
        self.closed = True
        tasks = [b.watch for b in self.all if b.watch is not None]
        if self._patrol is not None:
            tasks.append(self._patrol)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- health -------------------------------------------------------------------------------

    async def check(self, backend: Backend) -> bool:
        """Ask a server for its facts; it is up if it answers."""
        try:
            facts = await backend.server.facts()
        except (BackendError, ModelError, httpx.HTTPError) as exc:
            backend.reason = str(exc)
            return False
        if self.n_ctx and facts.n_ctx < self.n_ctx:
            log.warning("model server %s has slots of %d tokens, fewer than the %d the others have:"
                        " long chats may not fit there", backend.spec.label, facts.n_ctx, self.n_ctx)
        backend.facts = facts
        backend.up = True
        backend.reason = ""
        backend.since = time.monotonic()
        self.placement.server_up(backend.index, slots=facts.slots)
        return True

    async def down(self, backend: Backend, reason: str) -> None:
        """The server failed (refused, went silent, answered 5xx): its chats move elsewhere and
        it is checked with backoff until it answers again."""
        if not backend.up:
            return
        backend.up = False
        backend.reason = reason
        backend.since = time.monotonic()
        moved = self.placement.server_down(backend.index)
        if self.up:
            log.warning("model server %s is down (%s); %d chats move to the other servers",
                        backend.spec.label, reason, len(moved))
        else:
            log.error("every model server is down (the last, %s: %s); replies wait until one is "
                      "back", backend.spec.label, reason)
        self._watch(backend)
        await self._tell(ServerStatus(backend.spec.label, False, reason, self.up, len(self.all)))
        self._on_change()

    def _watch(self, backend: Backend) -> None:
        if not self.closed and (backend.watch is None or backend.watch.done()):
            backend.watch = asyncio.create_task(self._until_up(backend))

    async def _until_up(self, backend: Backend) -> None:
        delay = FIRST_RETRY
        while not self.closed:
            await asyncio.sleep(delay)
            if await self.check(backend):
                log.info("model server %s is back (%d slots)", backend.spec.label,
                         backend.facts.slots if backend.facts else 0)
                await self._tell(ServerStatus(backend.spec.label, True, "", self.up, len(self.all)))
                self._on_change()
                return
            delay = min(delay * 2, LAST_RETRY)

    async def _patrol_idle(self) -> None:
        """Check idle servers now and then, so one that died between replies is known down
        before a chat is sent to it."""
        while not self.closed:
            await asyncio.sleep(self._patrol_every)
            busy = {index for index, _, _, is_busy in self.placement.slots() if is_busy}
            for backend in self.all:
                if backend.up and backend.index not in busy:
                    try:
                        await backend.server.health()
                    except (BackendError, httpx.HTTPError) as exc:
                        await self.down(backend, str(exc))

    async def _tell(self, status: ServerStatus) -> None:
        for listener in self._listeners:
            try:
                await listener(status)
            except Exception:
                log.exception("a listener of model server changes failed")

    # -- what the servers serve -----------------------------------------------------------

    def model_info(self, max_ctx: int) -> ModelInfo:
        """The model as the chat side sees it, from the servers up (a `llama-server` first)."""
        up = [b for b in self.all if b.up and b.facts is not None]
        first = next((b for b in up if b.spec.kind == "llama.cpp"), up[0])
        facts = first.facts
        assert facts is not None
        n_ctx = min([max_ctx, *(b.facts.n_ctx for b in up if b.facts)])
        self.n_ctx = n_ctx
        every_knob = all(b.spec.kind == "llama.cpp" for b in self.all)
        return ModelInfo(
            path=Path(facts.model), name=Path(facts.model).stem or facts.model,
            n_ctx_train=max(facts.n_ctx_train, n_ctx), n_ctx=n_ctx,
            chat_template=facts.chat_template, bos_token=facts.bos_token,
            eos_token=facts.eos_token, file_type="remote",
            knobs=None if every_knob else OPENAI_KNOBS,
        )

    def describe(self) -> list[str]:
        """A line per server: URL, kind, model, state, slots held."""
        held: dict[int, int] = {}
        for index, _slot, owner, _busy in self.placement.slots():
            held[index] = held.get(index, 0) + (owner is not None)
        lines = []
        for backend in self.all:
            facts = backend.facts
            model = Path(facts.model).name if facts else "?"
            if backend.up and facts is not None:
                lines.append(_("{url} ({kind}, {model}): up, {held}/{slots} slots hold chats",
                               url=backend.spec.label, kind=backend.spec.kind, model=model,
                               held=held.get(backend.index, 0), slots=facts.slots))
            else:
                lines.append(_("{url} ({kind}, {model}): down for {seconds} s: {reason}",
                               url=backend.spec.label, kind=backend.spec.kind, model=model,
                               seconds=f"{time.monotonic() - backend.since:.0f}",
                               reason=backend.reason))
        return lines

    def served_models(self) -> list[tuple[str, bool, tuple[str, ...]]]:
        """(server URL, up, the models it serves) for every server."""
        return [(b.spec.label, b.up, b.facts.models if b.facts else ()) for b in self.all]
