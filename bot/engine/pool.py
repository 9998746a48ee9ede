"""The worker pool: one model serving many chats at once, each chat's KV cache kept between turns.

One llama.cpp context holds `n_slots` sequences (slots). A single worker thread makes every
llama.cpp call: each decode step carries the next token of every generating chat plus a chunk
of at most one waiting prompt (continuous batching), and a chat joins or leaves between steps.
A chat keeps its slot between replies, so a follow-up evaluates only what follows the cached
prefix; when slots run out, the least recently used idle chat is saved to disk and restored
later if reading it back is cheaper than evaluating again (also after a restart). A new chat
copies a prefix it shares with another slot (the system prompt) instead of evaluating it.
Requests wait in a bounded queue served round-robin between chats (`FairQueue`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from bot.core.prompt import Prompt
from bot.core.textstream import ReplyText
from bot.engine.base import (
    Finished,
    GenerationEvent,
    GenerationRequest,
    MemoryReport,
    ModelInfo,
    Queued,
    SlotReport,
    StopReason,
    TextDelta,
)
from bot.engine.native import check_model_file, physical_cores, route_llama_log
from bot.engine.scheduler import FairQueue
from bot.engine.slots import (
    BatchRow,
    ReusePlan,
    Sampler,
    Slot,
    SlotContext,
    SlotState,
    common_prefix,
    plan_reuse,
)
from bot.engine.statestore import StateStore, model_identity
from bot.engine.tokens import PromptTokenizer, token_piece
from bot.errors import EngineBusy, ModelError

log = logging.getLogger(__name__)

KvType = Literal["f16", "q8_0"]

MIN_SHARED_PREFIX = 16
"""A prefix shared with another slot is copied only from this many tokens on."""

DELIVERY_INTERVAL = 0.05
"""Seconds a piece of reply text may wait to be sent with the next ones.

Waking the event loop for every token costs the decoding threads more than the event loop's
own work: on a machine with as many cores as llama.cpp threads it takes a core from them and
holds the GIL the worker needs back after each decode. A reader cannot tell text 50 ms late;
the first text of a reply, its end, errors and queue places are sent at once.
"""


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


@dataclass(eq=False)
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)
    started: float = field(default_factory=time.monotonic)
    tokens: list[int] = field(default_factory=list)
    slot: Slot | None = None
    sampler: Sampler | None = None
    reply: ReplyText | None = None
    n_evaluated: int = 0
    generated: int = 0
    limit: int = 0
    next_token: int = -1
    ahead: int | None = None
    sent_text: bool = False
    running: bool = False
    """Started by the scheduler and not yet reported done to it."""

    @property
    def chat_key(self) -> str:
        return self.request.chat_key

    @property
    def prompt_left(self) -> int:
        assert self.slot is not None
        return len(self.tokens) - len(self.slot.tokens) if self.slot.state is SlotState.PROMPT else 0


_SHUTDOWN = object()


def _seq_id(job: _Job) -> int:
    assert job.slot is not None
    return job.slot.seq_id


def _deliver(items: list[tuple[_Job, GenerationEvent | BaseException]]) -> None:
    """On the event loop: put one step's events into their requests' queues."""
    for job, event in items:
        job.events.put_nowait(event)


class PoolEngine:
    """Serves many chats on one model with continuous batching and per-chat KV reuse."""

    def __init__(self, options: PoolOptions) -> None:
        route_llama_log()
        check_model_file(options.model_path)
        if options.n_slots < 1 or options.prefill_chunk < 1 or options.batch < options.n_slots:
            raise ValueError("n_slots and prefill_chunk must be positive and batch >= n_slots")
        threads = options.threads or physical_cores()
        try:
            self._ctx = SlotContext(
                options.model_path, n_slots=options.n_slots, n_ctx=options.n_ctx,
                threads=threads, batch=options.batch, kv_type=options.kv_type,
            )
        except (OSError, RuntimeError) as exc:
            raise ModelError(f"cannot load model {options.model_path}: {exc}") from exc
        self._options = options
        self._vocab = self._ctx.vocab
        self._tokenize = PromptTokenizer(self._vocab)
        self._info = self._read_info(options)
        self._slots = [Slot(seq_id) for seq_id in range(options.n_slots)]
        self._store: StateStore | None = None
        if options.state_dir is not None:
            identity = model_identity(options.model_path, options.kv_type)
            self._store = StateStore(options.state_dir, options.state_dir_max_bytes, identity)
        size = options.model_path.stat().st_size
        # The cost model's first guesses (replaced by measurements): prompt tokens per second
        # shrink with the model's size; a state file comes back at page-cache/SSD speed.
        self._prompt_rate = max(1.0, 1.4e10 / max(size, 1))
        self._read_rate = 5e8
        self.on_logits: Callable[[str, NDArray[np.float32]], None] | None = None
        """Debug hook, called on the worker thread with the logits each token is sampled from."""
        self.on_step: Callable[[list[tuple[str, int]]], None] | None = None
        """Debug hook: (chat, tokens in this step) for every decode step."""
        self._tokens_seen: dict[int, tuple[bool, bytes]] = {}
        """token -> (ends generation, its bytes): fixed for a vocabulary, asked for every token."""
        self._outbox: list[tuple[_Job, GenerationEvent | BaseException]] = []
        self._outbox_urgent = False
        self._outbox_since = 0.0
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._waiting: FairQueue[_Job] = FairQueue()
        self._active: list[_Job] = []
        self._pending = 0
        self._closed = False
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._warm_up_error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="llama-pool", daemon=True)
        self._thread.start()
        # Ready only after the warm-up decode: the first chat after a (re)start must not pay
        # for paging the weights in and starting the compute threads.
        self._ready.wait()
        if self._warm_up_error is not None:
            self._thread.join()
            self._closed = True
            self._ctx.close()
            raise ModelError(
                f"cannot run model {options.model_path}: {self._warm_up_error}"
            ) from self._warm_up_error
        log.info(
            "model loaded: %s (%s, trained context %d, %d slots x %d tokens, %d threads)",
            self._info.name, options.model_path, self._info.n_ctx_train, options.n_slots,
            self._info.n_ctx, threads,
        )
        log.info("%s", self.memory_report().summary())

    # -- the Engine protocol --------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def queued(self) -> int:
        """Requests accepted and not finished (running and waiting)."""
        return self._pending

    def tokenize(self, prompt: Prompt) -> list[int]:
        return self._tokenize(prompt)

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self.tokenize(prompt))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if self._closed:
            raise ModelError("the model was unloaded")
        with self._lock:
            if self._pending >= self._options.max_queue:
                raise EngineBusy(
                    f"The model is busy with {self._pending} requests; try again in a minute."
                )
            self._pending += 1
        job = _Job(request, asyncio.get_running_loop())
        self._inbox.put(job)
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

    async def aclose(self) -> None:
        """Cancel work in flight, save the chats in memory to the state directory, free it all."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(_SHUTDOWN)
        await asyncio.to_thread(self._thread.join)
        self._ctx.close()

    def cached_tokens(self, chat_key: str) -> list[int] | None:
        """The tokens in the chat's slot, if it holds one (for tests and diagnostics)."""
        for slot in list(self._slots):
            if slot.chat_key == chat_key:
                return list(slot.tokens)
        return None

    def memory_report(self) -> MemoryReport:
        per_token = self._ctx.kv_bytes_per_token
        slots = tuple(
            SlotReport(slot.seq_id, slot.chat_key, slot.state.value, len(slot.tokens),
                       len(slot.tokens) * per_token)
            for slot in list(self._slots)
        )
        return MemoryReport(
            kv_type=self._options.kv_type,
            kv_bytes_allocated=per_token * self._ctx.n_ctx * self._ctx.n_slots,
            kv_bytes_used=sum(slot.kv_bytes for slot in slots),
            slots=slots,
            saved_bytes=self._store.total_bytes() if self._store else 0,
            saved_bound=self._store.max_bytes if self._store else 0,
        )

    # -- worker thread --------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._ctx.warm_up()
        except Exception as exc:
            self._warm_up_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                block = not self._active and not len(self._waiting)
                if not self._take_inbox(block):
                    break
                if len(self._waiting):
                    self._drop_cancelled_waiting()
                    self._admit()
                    self._tell_places()
                    self._send()  # queue places and failures before a long prefill
                if self._active:
                    self._step()
                self._send(force=not self._active)
        except BaseException:
            log.exception("the pool's worker thread failed")
            raise
        finally:
            self._shutdown()
            self._send(force=True)

    def _emit(self, job: _Job, event: GenerationEvent | BaseException) -> None:
        if not self._outbox:
            self._outbox_since = time.monotonic()
        if isinstance(event, TextDelta):
            if not job.sent_text:
                job.sent_text = True
                self._outbox_urgent = True
        else:
            self._outbox_urgent = True
        self._outbox.append((job, event))

    def _send(self, *, force: bool = False) -> None:
        """Hand waiting events to their event loops, one wake-up per loop (see DELIVERY_INTERVAL)."""
        if not self._outbox:
            return
        if not (force or self._outbox_urgent
                or time.monotonic() - self._outbox_since >= DELIVERY_INTERVAL):
            return
        outbox, self._outbox = self._outbox, []
        self._outbox_urgent = False
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, GenerationEvent | BaseException]]] = {}
        for item in outbox:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop was closed: nobody is listening any more
                log.debug("dropped %d events for a closed event loop", len(items))

    def _take_inbox(self, block: bool) -> bool:
        """Move new requests into the wait list; False on shutdown."""
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if item is _SHUTDOWN:
                return False
            self._waiting.push(item.chat_key, item)

    def _drop_cancelled_waiting(self) -> None:
        for job in self._waiting.order():
            if job.request.cancel.cancelled:
                self._waiting.remove(job)
                self._forget(job)
                self._emit(job, self._finished(job, "cancelled"))

    def _admit(self) -> None:
        while len(self._active) < self._options.n_slots:
            popped = self._waiting.pop()
            if popped is None:
                return
            _, job = popped
            job.running = True
            try:
                self._start(job)
            except Exception as exc:
                log.exception("cannot start generation for chat %s", job.chat_key)
                self._fail(job, exc)

    def _tell_places(self) -> None:
        for place, job in enumerate(self._waiting.order(), start=1):
            if job.ahead != place:
                job.ahead = place
                self._emit(job, Queued(place))

    def _start(self, job: _Job) -> None:
        request = job.request
        job.tokens = self._tokenize(request.prompt)
        if request.cancel.cancelled:
            self._forget(job)
            self._emit(job, self._finished(job, "cancelled"))
            return
        room = self._ctx.n_ctx - len(job.tokens)
        if room <= 0:
            raise ModelError(
                f"the prompt has {len(job.tokens)} tokens, more than the context of "
                f"{self._ctx.n_ctx}"
            )
        slot = self._slot_for(job.chat_key)
        job.slot = slot
        synced = self._reuse(slot, job)
        slot.chat_key = job.chat_key
        slot.state = SlotState.PROMPT
        slot.last_used = time.monotonic()
        job.n_evaluated = len(job.tokens) - len(slot.tokens)
        sampling = request.sampling
        job.limit = min(sampling.n_predict, room)
        seed = sampling.seed if sampling.seed >= 0 else random.getrandbits(31)
        job.sampler = Sampler(sampling, n_vocab=self._ctx.n_vocab, seed=seed)
        job.reply = ReplyText(request.stop)
        self._active.append(job)
        if not synced:
            # llama.cpp applies stream copies and position shifts at the next decode; make it
            # happen now, before another slot is written or this one saved.
            self._decode({job: 1})

    def _slot_for(self, chat_key: str) -> Slot:
        for slot in self._slots:
            if slot.chat_key == chat_key and not slot.busy:
                return slot
        # llama.cpp evaluates the slots of one step in a single pass over the weights only
        # when their seq_ids are consecutive, so a new chat goes next to the busy slots:
        # an empty slot if one is adjacent, else the least recently used adjacent idle chat
        # is evicted (it costs a restore later; a gap costs a whole pass on every token).
        empty = [slot for slot in self._slots if slot.state is SlotState.EMPTY]
        if empty:
            return min(empty, key=lambda slot: (self._runs_with(slot), slot.seq_id))
        idle = [slot for slot in self._slots if slot.state is SlotState.IDLE]
        victim = min(idle, key=lambda slot: (self._runs_with(slot), slot.last_used))
        self._evict(victim)
        return victim

    def _runs_with(self, candidate: Slot) -> int:
        """Runs of consecutive busy seq_ids if `candidate` became busy too."""
        runs = 0
        previous = False
        for slot in self._slots:
            busy = slot.busy or slot is candidate
            runs += busy and not previous
            previous = busy
        return runs

    def _evict(self, slot: Slot) -> None:
        if self._store is not None and slot.chat_key is not None and slot.tokens:
            try:
                started = time.monotonic()
                with self._ctx.state_data(slot) as data:
                    written = self._store.save(slot.chat_key, slot.tokens, data)
                log.info("chat %s saved to disk: %d tokens, %d bytes in %.2f s", slot.chat_key,
                         len(slot.tokens), written, time.monotonic() - started)
            except OSError:
                log.exception("cannot save the state of chat %s", slot.chat_key)
        self._ctx.clear(slot)
        slot.reset()

    def _reuse(self, slot: Slot, job: _Job) -> bool:
        """Fill the slot with as much of the prompt as can be had without evaluating it.

        Returns False when llama.cpp still has to apply a copy or shift at the next decode.
        """
        tokens = job.tokens
        allow_shift = self._options.window_shift and self._ctx.can_shift
        if slot.chat_key == job.chat_key:
            plan = plan_reuse(slot.tokens, tokens, allow_shift=allow_shift)
            self._ctx.apply(slot, plan)
            return not plan.moved
        donor, shared = self._best_donor(slot, tokens)
        saved = self._store.find(job.chat_key) if self._store is not None else None
        if saved is not None:
            plan = plan_reuse(saved.tokens, tokens, allow_shift=allow_shift)
            if plan.reused > shared and self._restore_pays(saved.file_size, plan.reused - shared):
                if self._restore(slot, saved, job.chat_key):
                    self._ctx.apply(slot, plan)
                    return not plan.moved
        self._ctx.clear(slot)
        if donor is not None and shared >= MIN_SHARED_PREFIX:
            self._ctx.copy_prefix(donor, slot, shared)
            log.debug("chat %s: copied %d prompt tokens from slot %d", job.chat_key, shared,
                      donor.seq_id)
            return False
        return True

    def _best_donor(self, target: Slot, tokens: Sequence[int]) -> tuple[Slot | None, int]:
        best: Slot | None = None
        shared = 0
        for slot in self._slots:
            if slot is target or not slot.tokens:
                continue
            n = min(common_prefix(slot.tokens, tokens), len(tokens) - 1)
            if n > shared:
                best, shared = slot, n
        return best, shared

    def _restore_pays(self, file_size: int, tokens_saved: int) -> bool:
        restore = 0.005 + file_size / self._read_rate
        evaluate = tokens_saved / self._prompt_rate
        return restore < evaluate

    def _restore(self, slot: Slot, saved: Any, chat_key: str) -> bool:
        assert self._store is not None
        started = time.monotonic()
        try:
            with self._store.mapped(saved) as data:
                loaded = self._ctx.load_state(slot, data, saved.tokens)
        except OSError:
            log.exception("cannot read the saved state of chat %s", chat_key)
            self._ctx.clear(slot)
            return False
        if not loaded:
            log.warning("llama.cpp refused the saved state of chat %s; evaluating again", chat_key)
            self._store.delete(chat_key)
            return False
        seconds = time.monotonic() - started
        if seconds > 0:
            self._read_rate = 0.5 * self._read_rate + 0.5 * saved.file_size / seconds
        log.info("chat %s restored from disk: %d tokens in %.3f s", chat_key, len(saved.tokens),
                 seconds)
        return True

    # -- decoding -------------------------------------------------------------------------

    def _step(self) -> None:
        for job in [job for job in self._active if job.request.cancel.cancelled]:
            self._finish(job, "cancelled")
        if not self._active:
            return
        plan: dict[_Job, int] = {}
        prompts = []
        for job in self._active:
            assert job.slot is not None
            if job.slot.state is SlotState.GENERATING:
                plan[job] = 1
            elif job.prompt_left > 0:
                prompts.append(job)
        # While others generate, a prompt advances by chunks so their streams keep flowing;
        # alone, it takes whole batches.
        budget = self._options.prefill_chunk if plan else self._options.batch
        budget = min(budget, self._options.batch - len(plan))
        for job in prompts:
            if budget <= 0:
                break
            n = min(job.prompt_left, budget)
            plan[job] = n
            budget -= n
        self._decode(plan)

    def _decode(self, counts: dict[_Job, int]) -> None:
        """Evaluate `counts[job]` tokens of each job in one batch, then sample where due."""
        jobs = sorted(counts, key=_seq_id)  # see SlotContext.decode: one pass needs this order
        rows: list[BatchRow] = []
        sample_rows: list[tuple[_Job, int]] = []
        fed: list[tuple[_Job, Sequence[int]]] = []
        n_prompt = 0
        n_rows = 0
        for job in jobs:
            slot = job.slot
            assert slot is not None
            start = len(slot.tokens)
            tokens: Sequence[int]
            if slot.state is SlotState.GENERATING:
                tokens = (job.next_token,)
                last = True
            else:
                tokens = job.tokens[start : start + counts[job]]
                n_prompt += len(tokens)
                last = start + len(tokens) == len(job.tokens)
            n_rows += len(tokens)
            if last:
                sample_rows.append((job, n_rows - 1))
            rows.append((slot.seq_id, start, tokens, last))
            fed.append((job, tokens))
        if self.on_step is not None:
            self.on_step([(job.chat_key, len(tokens)) for job, tokens in fed])
        started = time.monotonic()
        try:
            self._ctx.decode(rows)
        except ModelError as exc:
            log.error("decode failed for chats %s: %s", [job.chat_key for job in jobs], exc)
            for job in jobs:
                assert job.slot is not None
                self._ctx.clear(job.slot)
                job.slot.reset()
                self._fail(job, exc)
            return
        if n_prompt >= 32:
            seconds = time.monotonic() - started
            if seconds > 0:
                self._prompt_rate = 0.7 * self._prompt_rate + 0.3 * n_prompt / seconds
        for job, tokens in fed:
            assert job.slot is not None
            job.slot.tokens.extend(tokens)
        for job, row in sample_rows:
            self._sample(job, row)

    def _sample(self, job: _Job, row: int) -> None:
        slot, sampler, reply = job.slot, job.sampler, job.reply
        assert slot is not None and sampler is not None and reply is not None
        slot.state = SlotState.GENERATING
        if job.request.cancel.cancelled:
            self._finish(job, "cancelled")
            return
        if self.on_logits is not None:
            self.on_logits(job.chat_key, self._ctx.logits(row))
        token = sampler.sample(self._ctx.ctx, row)
        seen = self._tokens_seen.get(token)
        if seen is None:
            seen = self._tokens_seen[token] = (self._ctx.is_eog(token),
                                               token_piece(self._vocab, token))
        if seen[0]:
            self._finish(job, "eos")
            return
        job.generated += 1
        delta = reply.feed(seen[1])
        if delta:
            self._emit(job, TextDelta(delta))
        if reply.stopped_by is not None:
            self._finish(job, "stop")
        elif job.generated >= job.limit:
            self._finish(job, "length" if job.limit == job.request.sampling.n_predict else "context")
        else:
            job.next_token = token

    def _finish(self, job: _Job, reason: StopReason) -> None:
        tail = job.reply.finish() if job.reply is not None else ""
        finished = self._finished(job, reason)
        # Released before the events go out: whoever sees Finished sees the queue without it.
        self._release(job)
        if tail:
            self._emit(job, TextDelta(tail))
        self._emit(job, finished)

    def _fail(self, job: _Job, exc: BaseException) -> None:
        self._release(job)
        self._emit(job, exc)

    def _release(self, job: _Job) -> None:
        if job.sampler is not None:
            job.sampler.close()
            job.sampler = None
        slot = job.slot
        if slot is not None and slot.busy:
            slot.state = SlotState.IDLE if slot.tokens else SlotState.EMPTY
            if slot.state is SlotState.EMPTY:
                slot.reset()
            slot.last_used = time.monotonic()
        if job in self._active:
            self._active.remove(job)
        self._forget(job)

    def _forget(self, job: _Job) -> None:
        """The request is over: free its place in the queue bound and its chat's turn."""
        if job.running:
            job.running = False
            self._waiting.done(job.chat_key)
        self._forget_pending()

    def _forget_pending(self) -> None:
        with self._lock:
            self._pending -= 1

    def _finished(self, job: _Job, reason: StopReason) -> Finished:
        return Finished(
            reason=reason,
            text=job.reply.text if job.reply is not None else "",
            n_prompt_tokens=len(job.tokens),
            n_evaluated=job.n_evaluated if job.slot is not None else 0,
            n_generated=job.generated,
            seconds=time.monotonic() - job.started,
        )

    def _shutdown(self) -> None:
        for job in list(self._active):
            self._finish(job, "cancelled")
        for job in self._waiting.order():
            self._waiting.remove(job)
            self._forget_pending()
            self._emit(job, self._finished(job, "cancelled"))
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not _SHUTDOWN:
                self._forget_pending()
                self._emit(item, self._finished(item, "cancelled"))
        for slot in self._slots:
            if slot.chat_key is not None:
                self._evict(slot)

    def _read_info(self, options: PoolOptions) -> ModelInfo:
        import llama_cpp

        ctx = self._ctx
        return ModelInfo(
            path=options.model_path,
            name=ctx.meta("general.name") or options.model_path.stem,
            n_ctx_train=ctx.n_ctx_train,
            n_ctx=ctx.n_ctx,
            chat_template=ctx.meta("tokenizer.chat_template"),
            bos_token=ctx.token_text(int(llama_cpp.llama_vocab_bos(ctx.vocab))),
            eos_token=ctx.token_text(int(llama_cpp.llama_vocab_eos(ctx.vocab))),
            file_type=ctx.meta("general.file_type") or "",
            size_bytes=options.model_path.stat().st_size,
        )


__all__ = ["MemoryReport", "PoolEngine", "PoolOptions", "ReusePlan", "SlotReport"]
