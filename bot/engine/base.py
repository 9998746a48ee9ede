"""The engine seam: what the chat side asks of a model, and nothing about how it runs.

The chat layer sees only `Engine`. Behind it sit the llama.cpp engines of this package, the
worker pool (`PoolEngine`, many chats at once, each keeping its KV cache) and the simple one
(`LlamaEngine`, llama-cpp-python's `Llama`, one chat at a time), and the remote engine in front
of model servers (`remote/`); tests put a scripted fake (`tests/fakeengine.py`) in its place.
All of them take requests through one `RequestQueue` (`requests.py`). An engine streams
`TextDelta` events and ends with one `Finished`; it is told the chat a request belongs to, so
an engine that keeps per-chat state (a KV cache per chat) can reuse it. A request that has to
wait first gets `Queued` events with its place in the queue."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from bot.core.knobs import SAMPLING, KnobValues, Value
from bot.core.prompt import Prompt, Turn
from bot.core.thinking import Thinking
from bot.i18n import _

StopReason = Literal["eos", "stop", "length", "cancelled", "context"]


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What the chat side needs to know about the loaded model."""

    path: Path
    name: str
    n_ctx_train: int
    n_ctx: int
    """The engine's context size: no chat's window can be larger."""
    chat_template: str | None
    bos_token: str
    eos_token: str
    file_type: str = ""
    size_bytes: int = 0
    knobs: frozenset[str] | None = None
    """The knobs the engine honours, by name (None: every knob of `bot.core.knobs`); an
    OpenAI-compatible server has no `top_k`, `min_p` or repeat penalty."""


class SamplingParams(KnobValues):
    """The sampling flags of one reply: a value for every sampling knob of `bot.core.knobs`
    (`temp`, `top_k`, `top_p`, `min_p`, `repeat_penalty`, `repeat_last_n`, ...), the reply
    length and the seed. Knobs not given take the table's defaults; read them as attributes."""

    __slots__ = ("n_predict", "seed")
    knobs = SAMPLING
    n_predict: int
    seed: int

    def __init__(self, *, n_predict: int, seed: int = -1, **values: float | int) -> None:
        super().__init__(**values)
        object.__setattr__(self, "n_predict", int(n_predict))
        object.__setattr__(self, "seed", int(seed))

    def as_dict(self) -> dict[str, Value]:
        """Every value by name, the reply length and seed included."""
        return {**self._values, "n_predict": self.n_predict, "seed": self.seed}


@dataclass(frozen=True)
class SlotReport:
    """One sequence of an engine's context: the chat it holds, its state and KV bytes."""

    seq_id: int
    chat_key: str | None
    state: str
    tokens: int
    kv_bytes: int


@dataclass(frozen=True)
class MemoryReport:
    """KV memory of an engine's sequences and bytes of saved states, for /settings and logs."""

    kv_type: str
    kv_bytes_allocated: int
    kv_bytes_used: int
    slots: tuple[SlotReport, ...]
    saved_bytes: int = 0
    saved_bound: int = 0
    servers: tuple[str, ...] = ()
    """A remote engine's servers, a line each (their KV caches are theirs to report)."""

    def summary(self) -> str:
        """One line, in the current language (shown by /settings)."""
        if self.servers:
            return _("model servers: {servers}", servers="; ".join(self.servers))
        mib = 1 << 20
        used = sum(1 for slot in self.slots if slot.chat_key is not None)
        values = {
            "kv_type": self.kv_type, "used": f"{self.kv_bytes_used / mib:.1f}",
            "allocated": f"{self.kv_bytes_allocated / mib:.1f}", "held": used,
            "slots": len(self.slots),
        }
        if self.saved_bound:
            return _(
                "KV cache {kv_type}: {used} of {allocated} MiB in use, {held}/{slots} "
                "slots hold chats; saved states {saved} of {bound} MiB",
                saved=f"{self.saved_bytes / mib:.1f}", bound=f"{self.saved_bound / mib:.0f}",
                **values,
            )
        return _(
            "KV cache {kv_type}: {used} of {allocated} MiB in use, {held}/{slots} slots "
            "hold chats", **values,
        )


class CancelToken:
    """Set by `/stop` (or Ctrl+C, or a reader that stopped listening), from any thread.

    Whoever must act on it registers a callback (`on_cancel`) and is called at once; a worker
    thread between tokens reads `cancelled`. Nothing polls it on a timer."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback` when cancelled (now, if it already is)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """One reply to produce: the chat it belongs to, the prompt, sampling and stop strings."""

    chat_key: str
    prompt: Prompt
    sampling: SamplingParams
    stop: tuple[str, ...] = ()
    cancel: CancelToken = field(default_factory=CancelToken)
    system: str | None = None
    turns: tuple[Turn, ...] = ()
    """The conversation the prompt was rendered from (system prompt and the window's turns),
    for a server that applies its own chat template (an OpenAI-compatible one)."""
    share: str | None = None
    """Whose turn the request takes in the fair queue (the Telegram chat, all of a forum's
    topics together; None: its own chat_key)."""
    thinking: Thinking | None = None
    """How to tell the reply's thinking from its answer and how long it may think (None: the
    reply is all answer). `sampling.n_predict` bounds the answer alone."""


@dataclass(frozen=True)
class Queued:
    """The request waits: `ahead` requests will start before it (sent again when it changes).
    `stalled`: no server can take it now (all are down); it waits until one is back."""

    ahead: int
    stalled: bool = False


@dataclass(frozen=True)
class Restarted:
    """The reply starts over (the server writing it failed and another writes it anew): the
    text streamed so far is void."""


@dataclass(frozen=True)
class TextDelta:
    text: str
    thinking: bool = False
    """A piece of the model's thinking, not of its answer (see `GenerationRequest.thinking`)."""


@dataclass(frozen=True, kw_only=True)
class Finished:
    reason: StopReason
    text: str
    n_prompt_tokens: int
    n_evaluated: int
    """Prompt tokens actually evaluated (the rest came from the cache)."""
    n_generated: int
    """Every token generated, the thinking's included."""
    seconds: float
    thinking: str = ""
    """What the model thought before its answer (`text` is the answer alone)."""
    n_thinking: int = 0
    """Of `n_generated`, the thinking's tokens."""


GenerationEvent = Queued | Restarted | TextDelta | Finished


class Engine(Protocol):
    """A loaded model that counts tokens and streams replies."""

    @property
    def info(self) -> ModelInfo: ...

    async def count_tokens(self, prompt: Prompt) -> int:
        """Tokens the prompt takes, exactly as `generate` will tokenize it (a remote engine
        asks its server's tokenizer, or estimates where the server has none)."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream the reply; the last event is `Finished`. Raises EngineBusy if queue is full."""
        ...

    def memory_report(self) -> MemoryReport:
        """What the engine's KV caches (and saved states) take, for /settings."""
        ...

    async def aclose(self) -> None:
        """Finish or cancel work in flight and free the model."""
        ...


@runtime_checkable
class TakesTurns(Protocol):
    """An engine whose model shares this machine's CPU with other work (a transcription,
    reading an image): that work waits for a fair turn in the replies' queue and holds one of
    the engine's places while it runs. An engine without it (its model runs elsewhere) lets
    such work run at once."""

    def turn(
        self, *, chat_key: str, cancel: CancelToken, share: str | None = None,
        on_place: Callable[[Queued], Awaitable[None]] | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Wait for the turn (`on_place` hears each place in the queue while waiting), then
        hold a place while the body runs. Raises EngineBusy when the queue is full, and
        `bot.engine.requests.TurnCancelled` when `cancel` is set while waiting."""
        ...


@dataclass(frozen=True)
class ServerStatus:
    """A model server went down or came back (remote engine): for the log and the admins."""

    url: str
    up: bool
    reason: str
    servers_up: int
    servers: int


StatusListener = Callable[[ServerStatus], Awaitable[None]]


@runtime_checkable
class ServedElsewhere(Protocol):
    """An engine whose model runs on servers elsewhere (the remote engine): /model lists what
    they serve instead of loading a file, and the admins hear when a server goes down."""

    def served_models(self) -> list[tuple[str, bool, tuple[str, ...]]]:
        """(server URL, up, the models it serves) for every server."""
        ...

    def add_listener(self, listener: StatusListener) -> None:
        """Call `listener` whenever a server goes down or comes back."""
        ...
