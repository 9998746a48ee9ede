"""The worker pool: one model serving many chats at once, each chat's KV cache kept between turns.

One llama.cpp context holds `n_slots` sequences (slots). A single worker thread makes every
llama.cpp call: each decode step carries the next token of every generating chat plus a chunk
of at most one waiting prompt (continuous batching), and a chat joins or leaves between steps.
A chat keeps its slot between replies, so a follow-up evaluates only what follows the cached
prefix; when slots run out, the least recently used idle chat is saved to disk and restored
later if reading it back is cheaper than evaluating again (also after a restart). A new chat
copies a prefix it shares with another slot (the system prompt) instead of evaluating it.
Requests wait in the engine's bounded `RequestQueue`, served round-robin between chats, which
starts one whenever a slot is free. With `draft` on, each step also checks tokens drafted
after each generating chat's next token (speculative decoding, `bot.engine.drafting`): a reply
that repeats what its chat holds is written several tokens a step, and is the same reply.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from bot.engine.base import MemoryReport, SlotReport
from bot.engine.cache import SlotCache
from bot.engine.decoder import BatchDecoder, PoolJob
from bot.engine.drafting import F16_ADVICE, Drafting, DraftSource, DraftStats, NgramSource
from bot.engine.draftmodel import DraftModel
from bot.engine.draftplan import StepCost
from bot.engine.intake import Intake
from bot.engine.local import LocalEngine
from bot.engine.native import describe_model
from bot.engine.requests import Ticket
from bot.engine.slots import LONE_TOKEN_CELLS, SlotContext
from bot.engine.statestore import StateStore, model_identity
from bot.engine.tokens import PromptTokenizer
from bot.errors import ModelError
from bot.i18n import _
from bot.llama.cpu import physical_cores
from bot.llama.loading import check_model_file, route_llama_log

log = logging.getLogger(__name__)

KvType = Literal["f16", "q8_0"]


@dataclass(frozen=True, kw_only=True)
class PoolOptions:
    """How to load and run the model for many chats at once."""

    model_path: Path
    n_ctx: int = 2048
    """Context of each slot (one chat's window); capped at the model's trained context."""
    n_slots: int = 4
    """Chats kept in memory at once; also the most that generate at the same time."""
    threads: int | None = None
    batch: int = 512
    max_queue: int = 32
    """Requests accepted (running and waiting) before `EngineBusy`."""
    kv_type: KvType = "f16"
    state_dir: Path | None = None
    """Where evicted chats' KV states go (None: evicted chats are evaluated again)."""
    state_dir_max_bytes: int = 2 << 30
    prefill_chunk: int = 128
    """Prompt tokens evaluated per step while other chats are generating."""
    window_shift: bool = False
    """Reuse the cache after a window slid by shifting positions instead of re-evaluating.

    Off by default: the moved tokens keep attention to the turns that left the window, so the
    logits differ from a fresh evaluation (see the pool's tests).
    """
    draft: str | Path = "none"
    """Speculative decoding: "none"; "ngram", drafts from each chat's own tokens; or the path
    of a small GGUF model with the same vocabulary, a draft model."""
    draft_max: int = 4
    """The most tokens drafted after a chat's next token, checked in one step."""


class PoolEngine(LocalEngine):
    """Serves many chats on one model with continuous batching and per-chat KV reuse.

    Composes the `Intake` (its `RequestQueue` starts a request whenever a slot is free), the
    `SlotCache` (slot choice, eviction, saved states) and the `BatchDecoder` on one worker thread.
    """

    def __init__(self, options: PoolOptions) -> None:
        route_llama_log()
        check_model_file(options.model_path)
        if options.n_slots < 1 or options.prefill_chunk < 1 or options.batch < options.n_slots:
            raise ValueError("n_slots and prefill_chunk must be positive and batch >= n_slots")
        if options.draft_max < 1:
            raise ValueError("draft_max must be positive")
        threads = options.threads or physical_cores()
        try:
            self._ctx = SlotContext(
                options.model_path, n_slots=options.n_slots, n_ctx=options.n_ctx,
                threads=threads, batch=options.batch, kv_type=options.kv_type,
                rows_as_alone=options.draft != "none",
            )
        except (OSError, RuntimeError) as exc:
            raise ModelError(_("cannot load model {path}: {error}", path=options.model_path,
                               error=exc)) from exc
        self._options = options
        try:
            self._drafting = _drafting(options, self._ctx, threads)
        except BaseException:
            self._ctx.close()
            raise
        self._tokenize = PromptTokenizer(self._ctx.vocab)
        self._info = describe_model(self._ctx.model, self._ctx.vocab, options.model_path,
                                    n_ctx=self._ctx.n_ctx)
        store = None
        if options.state_dir is not None:
            # A state saved with flash attention holds V as stored for it (not transposed).
            flash = ("flash-attention",) if self._ctx.flash_attention and options.kv_type == "f16" else ()
            identity = model_identity(options.model_path, options.kv_type, *flash)
            store = StateStore(options.state_dir, options.state_dir_max_bytes, identity)
        self._cache = SlotCache(self._ctx, store, model_path=options.model_path,
                                window_shift=options.window_shift)
        self._intake = Intake(max_queue=options.max_queue, capacity=options.n_slots)
        self._decoder = BatchDecoder(
            self._ctx, self._cache, self._intake, batch=options.batch,
            prefill_chunk=options.prefill_chunk, drafting=self._drafting,
        )
        self._ready = threading.Event()
        self._warm_up_error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="llama-pool", daemon=True)
        self._thread.start()
        # Ready only after the warm-up decode: the first chat after a (re)start must not pay
        # for paging the weights in and starting the compute threads.
        self._ready.wait()
        if self._warm_up_error is not None:
            self._thread.join()
            self._intake.close()
            self._free()
            raise ModelError(_(
                "cannot run model {path}: {error}", path=options.model_path,
                error=self._warm_up_error,
            )) from self._warm_up_error
        self._log_loaded(threads)

    def _log_loaded(self, threads: int) -> None:
        options, info = self._options, self._info
        log.info(
            "model loaded: %s (%s, trained context %d, %d slots x %d tokens, %d threads)",
            info.name, options.model_path, info.n_ctx_train, options.n_slots, info.n_ctx, threads,
        )
        log.info("%s", self.memory_report().summary())
        if self._drafting is not None:
            cost = self._drafting.cost
            log.info("drafting: %s, up to %d tokens a step (a step costs %.1f ms a pass over the "
                     "weights, %.2f ms a token and %.2f ms a token more for each thousand cached "
                     "tokens it attends to)", self._drafting.source.name, options.draft_max,
                     cost.pass_seconds * 1000, cost.token_seconds * 1000,
                     cost.context_seconds * 1000)
            if options.kv_type == "f16":
                log.warning("%s", F16_ADVICE)

    # -- the Engine protocol (the rest is LocalEngine's) ---------------------------------

    def _free(self) -> None:
        if self._drafting is not None:
            self._drafting.close()
        self._ctx.close()

    def memory_report(self) -> MemoryReport:
        per_token = self._ctx.kv_bytes_per_token
        slots = tuple(
            SlotReport(slot.seq_id, slot.chat_key, slot.state.value, len(slot.tokens),
                       len(slot.tokens) * per_token)
            for slot in list(self._cache.slots)
        )
        store = self._cache.store
        return MemoryReport(
            kv_type=self._options.kv_type,
            kv_bytes_allocated=per_token * self._ctx.n_ctx * self._ctx.n_slots,
            kv_bytes_used=sum(slot.kv_bytes for slot in slots),
            slots=slots,
            saved_bytes=store.total_bytes() if store else 0,
            saved_bound=store.max_bytes if store else 0,
        )

    def draft_stats(self) -> DraftStats | None:
        """Tokens drafted and accepted since the pool started (None: drafting is off)."""
        return self._drafting.stats() if self._drafting is not None else None

    async def forget(self, chat_key: str) -> None:
        """Drop what the pool keeps of a chat: its slot's tokens and its saved state file."""
        await self._intake.on_worker(lambda: self._cache.forget(chat_key))

    # -- diagnostics ----------------------------------------------------------------------

    def cached_tokens(self, chat_key: str) -> list[int] | None:
        """The tokens in the chat's slot, if it holds one (for tests and diagnostics)."""
        for slot in list(self._cache.slots):
            if slot.chat_key == chat_key:
                return list(slot.tokens)
        return None

    @property
    def on_logits(self) -> Callable[[str, NDArray[np.float32]], None] | None:
        """Debug hook, called on the worker thread with the logits each token is sampled from."""
        return self._decoder.on_logits

    @on_logits.setter
    def on_logits(self, hook: Callable[[str, NDArray[np.float32]], None] | None) -> None:
        self._decoder.on_logits = hook

    @property
    def on_step(self) -> Callable[[list[tuple[str, int]]], None] | None:
        """Debug hook: (chat, tokens in this step) for every decode step."""
        return self._decoder.on_step

    @on_step.setter
    def on_step(self, hook: Callable[[list[tuple[str, int]]], None] | None) -> None:
        self._decoder.on_step = hook

    # -- worker thread: intake -> decoder -----------------------------------------------

    def _work(self) -> None:
        try:
            self._ctx.warm_up()
            if self._drafting is not None:
                self._drafting.warm_up(self._ctx)
        except Exception as exc:
            self._warm_up_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                taken = self._intake.take(block=not self._decoder.active)
                if taken is None:
                    break
                if taken:
                    self._admit(taken)
                    self._intake.send()  # failures before a long prefill
                if self._decoder.active:
                    self._decoder.step()
                self._intake.send(force=not self._decoder.active)
        except BaseException:
            log.exception("the pool's worker thread failed")
            raise
        finally:
            self._shutdown()
            self._intake.send(force=True)

    def _admit(self, taken: list[Ticket]) -> None:
        """Start what the request queue started (it starts no more than there are slots)."""
        for ticket in taken:
            job = PoolJob(ticket)
            try:
                self._decoder.start(job, self._tokenize(job.request.prompt))
            except Exception as exc:
                log.exception("cannot start generation for chat %s", job.chat_key)
                self._decoder.end(job, exc)

    def _shutdown(self) -> None:
        self._decoder.finish_all()
        self._intake.drain()
        self._cache.evict_all()


def _drafting(options: PoolOptions, ctx: SlotContext, threads: int) -> Drafting | None:
    """The pool's drafting as `options.draft` asks (a draft model is loaded here)."""
    if options.draft == "none":
        return None
    if not ctx.can_truncate:
        log.warning("drafting is off: %s keeps a recurrent state, which cannot drop the drafts "
                    "it does not write", options.model_path)
        return None
    if options.draft == "ngram":
        source: DraftSource = NgramSource()
    else:
        source = DraftModel(Path(options.draft).expanduser(), target=ctx, threads=threads)
    # A first guess at what a step costs; measured at warm-up.
    lone = LONE_TOKEN_CELLS if ctx.flash_attention and options.kv_type == "f16" else None
    return Drafting(source, most=options.draft_max, cost=StepCost(0.05, 0.005),
                    lone_token_from=lone)


__all__ = ["MemoryReport", "PoolEngine", "PoolOptions", "SlotReport"]
