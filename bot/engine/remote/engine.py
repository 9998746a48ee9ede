"""The remote engine: the `Engine` seam in front of inference servers (`llama-server`s and
OpenAI-compatible ones) instead of a model in this process.

It is the engines' one request path (`RequestQueue`: the bound, the fair order, places,
delivery, one end) run by a `Dispatcher` that writes each reply on a server with a slot free,
over the `Backends` that know which servers are up. Each chat sticks to its slot so the
server's cache of it serves the follow-up. A server that refuses connections, goes silent or
answers 5xx is marked down and checked with backoff until healthy; its chats move to the
others, and a reply it was writing is written elsewhere. While every server is down requests
wait (`Queued(stalled=True)`) and are answered when one is back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from bot.core.prompt import Prompt
from bot.engine.base import (
    GenerationEvent,
    GenerationRequest,
    MemoryReport,
    ModelInfo,
    SlotReport,
    StatusListener,
)
from bot.engine.remote.backends import Backends
from bot.engine.remote.dispatch import Dispatcher
from bot.engine.remote.llamacpp import LlamaServer
from bot.engine.remote.openai import TokenEstimate
from bot.engine.remote.spec import BackendSpec
from bot.engine.requests import RequestQueue
from bot.errors import BackendDown, ModelError

log = logging.getLogger(__name__)


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


class RemoteEngine:
    """Replies written by inference servers; see the module's docstring."""

    def __init__(self, options: RemoteOptions) -> None:
        self._options = options
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(options.timeout, connect=min(5.0, options.timeout)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._estimate = TokenEstimate()
        self.backends = Backends(options.backends, self._client, patrol=options.patrol,
                                 on_change=self._servers_changed)
        self._dispatcher = Dispatcher(self.backends, self._estimate)
        self._requests = RequestQueue(max_queue=options.max_queue, runner=self._dispatcher)
        self._dispatcher.requests = self._requests
        self._info: ModelInfo | None = None

    @classmethod
    async def connect(cls, options: RemoteOptions) -> RemoteEngine:
        """Reach the servers (waiting up to `connect_wait` for a first one) and learn the model
        from them; raises ModelError when none answers."""
        engine = cls(options)
        try:
            await engine.backends.connect(options.connect_wait)
            engine._info = engine.backends.model_info(options.max_ctx)
        except BaseException:
            await engine.aclose()
            raise
        return engine

    @property
    def closed(self) -> bool:
        return self._requests.closed

    async def aclose(self) -> None:
        """Cancel the replies in flight and waiting, stop the health checks, close the client."""
        if self._requests.closed:
            return
        self._requests.close()
        await self._dispatcher.stop_all()
        await self.backends.aclose()
        await self._client.aclose()

    def _servers_changed(self) -> None:
        self._requests.dispatch()

    # -- the Engine protocol ----------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise ModelError("the remote engine is not connected")
        return self._info

    @property
    def queued(self) -> int:
        """Requests accepted and not finished (running and waiting)."""
        return self._requests.pending

    async def count_tokens(self, prompt: Prompt) -> int:
        """The prompt's tokens by a `llama-server`'s tokenizer; the calibrated estimate when
        only OpenAI servers are up (they have no tokenizer endpoint)."""
        for backend in self.backends.all:
            if backend.up and isinstance(backend.server, LlamaServer):
                try:
                    return len(await backend.server.tokens.prompt(prompt))
                except BackendDown as exc:
                    await self.backends.down(backend, str(exc))
        return self._estimate(prompt)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        return self._requests.stream(request)

    def memory_report(self) -> MemoryReport:
        slots = tuple(
            SlotReport(seq_id=number, chat_key=owner, state="busy" if busy else "idle",
                       tokens=0, kv_bytes=0)
            for _, number, owner, busy in self.backends.placement.slots()
        )
        return MemoryReport(kv_type="remote", kv_bytes_allocated=0, kv_bytes_used=0, slots=slots,
                            servers=tuple(self.backends.describe()))

    # -- what the chat side may ask besides -------------------------------------------------

    async def forget(self, chat_key: str) -> None:
        """Erase the chat's idle slot on its `llama-server` and stop restoring its saved cache."""
        await self._dispatcher.forget(chat_key)

    def add_listener(self, listener: StatusListener) -> None:
        """Call `listener` whenever a server goes down or comes back."""
        self.backends.add_listener(listener)

    def served_models(self) -> list[tuple[str, bool, tuple[str, ...]]]:
        """(server URL, up, the models it serves) for every server."""
        return self.backends.served_models()

    @property
    def servers_up(self) -> int:
        return self.backends.up
