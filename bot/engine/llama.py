"""The llama.cpp engine: one model, one worker thread, replies streamed to the event loop.

This is the only module (with `bot.engine.native`) that imports llama_cpp. The model is not
thread-safe, so every call that touches its context runs on the worker thread; tokenizing only
reads the vocabulary and may run anywhere. llama.cpp releases the GIL while it computes, so the
event loop stays responsive during a decode.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.prompt import Prompt
from bot.core.textstream import ReplyText
from bot.engine.base import (
    Finished,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    Queued,
    StopReason,
    TextDelta,
)
from bot.engine.native import check_model_file, route_llama_log
from bot.engine.tokens import PromptTokenizer, token_piece
from bot.errors import EngineBusy, ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """How to load and run the model: the -m -c -t -b flags and the queue bound."""

    model_path: Path
    n_ctx: int = 2048
    threads: int | None = None
    batch: int = 512
    max_queue: int = 32
    min_p: float = 0.05


@dataclass
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)

    def emit(self, event: GenerationEvent | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


_SHUTDOWN = object()


class LlamaEngine:
    """Runs a GGUF model with llama-cpp-python on a dedicated worker thread."""

    def __init__(self, options: EngineOptions) -> None:
        import llama_cpp

        route_llama_log()
        check_model_file(options.model_path)
        threads = options.threads or physical_cores()
        try:
            self._llama = self._load(llama_cpp, options, options.n_ctx, threads)
            trained = self._llama._model.n_ctx_train()
            if 0 < trained < options.n_ctx:
                # Never size the KV cache beyond the trained context (the file is mmapped, so
                # loading again is cheap).
                self._llama.close()
                self._llama = self._load(llama_cpp, options, trained, threads)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(
                f"cannot load model {options.model_path}: {exc} "
                "(is it a complete GGUF file of a supported architecture?)"
            ) from exc
        self._llama_cpp = llama_cpp
        self._vocab = self._llama._model.vocab
        self._tokenize = PromptTokenizer(self._vocab)
        self._options = options
        self._info = self._read_info(options, threads)
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._pending = 0
        self._waiting: list[_Job] = []
        self._current: _Job | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="llama-worker", daemon=True)
        self._thread.start()
        log.info(
            "model loaded: %s (%s, trained context %d, context %d, %d threads)",
            self._info.name, options.model_path, self._info.n_ctx_train, self._info.n_ctx, threads,
        )

    @staticmethod
    def _load(llama_cpp: Any, options: EngineOptions, n_ctx: int, threads: int) -> Any:
        return llama_cpp.Llama(
            model_path=str(options.model_path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=min(options.batch, n_ctx),
            verbose=False,
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def queued(self) -> int:
        """Requests accepted and not finished (running and waiting)."""
        return self._pending

    def tokenize(self, prompt: Prompt) -> list[int]:
        """Tokenize segment by segment: markup with control tokens, user text as plain text."""
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
        with self._lock:
            ahead = len(self._waiting) + (1 if self._current is not None else 0)
            self._waiting.append(job)
        if ahead:
            job.emit(Queued(ahead))
        self._jobs.put(job)
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
        if self._closed:
            return
        self._closed = True
        self._jobs.put(_SHUTDOWN)
        await asyncio.to_thread(self._thread.join)
        self._llama.close()

    # -- worker thread -------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _SHUTDOWN:
                return
            with self._lock:
                self._waiting.remove(job)
                self._current = job
                for place, waiting in enumerate(self._waiting, start=1):
                    waiting.emit(Queued(place))
            try:
                self._run(job)
            except Exception as exc:  # delivered to the waiting coroutine, which raises it
                log.exception("generation failed for chat %s", job.request.chat_key)
                job.emit(exc)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._current = None

    def _run(self, job: _Job) -> None:
        request = job.request
        started = time.monotonic()
        tokens = self.tokenize(request.prompt)
        if request.cancel.cancelled:
            job.emit(self._finished("cancelled", "", tokens, 0, 0, started))
            return
        room = self._info.n_ctx - len(tokens)
        if room <= 0:
            raise ModelError(
                f"the prompt has {len(tokens)} tokens, more than the context of {self._info.n_ctx}"
            )
        cached = _common_prefix(self._llama._input_ids[: self._llama.n_tokens].tolist(), tokens)
        n_evaluated = len(tokens) - min(cached, len(tokens) - 1)
        sampling = request.sampling
        limit = min(sampling.n_predict, room)
        seed = sampling.seed if sampling.seed >= 0 else random.getrandbits(31)
        self._llama.set_seed(seed)
        reply = ReplyText(request.stop)
        reason: StopReason = "length"
        generated = 0
        stream = self._llama.generate(
            tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=self._options.min_p,
            temp=sampling.temp,
            repeat_penalty=sampling.repeat_penalty,
        )
        try:
            for token in stream:
                if request.cancel.cancelled:
                    reason = "cancelled"
                    break
                if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    reason = "eos"
                    break
                generated += 1
                delta = reply.feed(self._piece(token))
                if delta:
                    job.emit(TextDelta(delta))
                if reply.stopped_by is not None:
                    reason = "stop"
                    break
                if generated >= limit:
                    reason = "length" if limit == sampling.n_predict else "context"
                    break
        finally:
            stream.close()
        tail = reply.finish()
        if tail:
            job.emit(TextDelta(tail))
        job.emit(self._finished(reason, reply.text, tokens, n_evaluated, generated, started))

    def _piece(self, token: int) -> bytes:
        return token_piece(self._vocab, token)

    @staticmethod
    def _finished(
        reason: StopReason, text: str, tokens: list[int], evaluated: int, generated: int,
        started: float,
    ) -> Finished:
        return Finished(
            reason=reason,
            text=text,
            n_prompt_tokens=len(tokens),
            n_evaluated=evaluated,
            n_generated=generated,
            seconds=time.monotonic() - started,
        )

    def _read_info(self, options: EngineOptions, threads: int) -> ModelInfo:
        metadata = self._llama.metadata
        model = self._llama._model
        return ModelInfo(
            path=options.model_path,
            name=metadata.get("general.name") or options.model_path.stem,
            n_ctx_train=model.n_ctx_train(),
            n_ctx=self._llama.n_ctx(),
            chat_template=metadata.get("tokenizer.chat_template"),
            bos_token=self._token_text(self._llama.token_bos()),
            eos_token=self._token_text(self._llama.token_eos()),
            file_type=metadata.get("general.file_type", ""),
            size_bytes=options.model_path.stat().st_size,
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text = self._llama_cpp.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def physical_cores() -> int:
    """Physical cores (not hyper-threads): llama.cpp runs best with one thread per core."""
    seen: set[str] = set()
    base = Path("/sys/devices/system/cpu")
    for topology in base.glob("cpu[0-9]*/topology/thread_siblings_list"):
        try:
            seen.add(topology.read_text().strip())
        except OSError:
            continue
    if seen:
        return len(seen)
    import os

    return max(1, (os.cpu_count() or 2) // 2)
