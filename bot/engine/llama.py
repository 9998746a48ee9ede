"""The simple engine: one chat at a time on llama-cpp-python's high-level `Llama`.

The model is not thread-safe, so every call that touches its context runs on one worker thread;
requests come and go through the shared `Intake`, and wait their turn first come, first served
(their place in the line is told as it changes). llama.cpp releases the GIL while it computes,
so the event loop stays responsive during a decode. The pool engine (`bot.engine.pool`) is the
one for many chats; this one keeps the high-level library's behaviour, for comparison.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.core.textstream import ReplyText
from bot.engine.base import (
    MemoryReport,
    ModelInfo,
    SlotReport,
    StopReason,
    TextDelta,
)
from bot.engine.intake import Intake, Ticket, finished_now
from bot.engine.local import LocalEngine
from bot.engine.native import check_model_file, physical_cores, route_llama_log
from bot.engine.slots import common_prefix
from bot.engine.tokens import PromptTokenizer, token_piece
from bot.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """How to load and run the model: the -m -c -t -b flags and the queue bound."""

    model_path: Path
    n_ctx: int = 2048
    threads: int | None = None
    batch: int = 512
    max_queue: int = 32


class LlamaEngine(LocalEngine):
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
        self._info = self._read_info(options)
        self._intake = Intake(max_queue=options.max_queue)
        self._line: deque[Ticket] = deque()
        self._chat_key: str | None = None
        self._closing = False
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

    # -- the Engine protocol (the rest is LocalEngine's) ---------------------------------

    def memory_report(self) -> MemoryReport:
        ctx = self._llama._ctx.ctx
        n_ctx = self._info.n_ctx
        allocated = int(self._llama_cpp.llama_state_get_size(ctx)) if ctx is not None else 0
        used_tokens = int(self._llama.n_tokens)
        used = allocated * used_tokens // n_ctx if n_ctx else 0
        slot = SlotReport(0, self._chat_key, "idle", used_tokens, used)
        return MemoryReport(kv_type="f16", kv_bytes_allocated=allocated, kv_bytes_used=used,
                            slots=(slot,))

    def _free(self) -> None:
        self._llama.close()

    # -- worker thread ----------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while not self._closing and self._take(block=not self._line, running=False):
                ticket = self._line.popleft()
                self._tell_places()
                try:
                    self._run(ticket)
                except Exception as exc:  # delivered to the waiting coroutine, which raises it
                    log.exception("generation failed for chat %s", ticket.chat_key)
                    self._intake.end(ticket, exc)
                self._intake.send(force=True)
        finally:
            for ticket in self._line:
                self._intake.end(ticket, finished_now(ticket, "cancelled"))
            self._line.clear()
            self._intake.drain()
            self._intake.send(force=True)

    def _take(self, *, block: bool, running: bool = True) -> bool:
        """Move new requests into the line; False once the engine is closing. Places are told
        while a reply `running` is ahead of the line."""
        taken = self._intake.take(block=block)
        if taken is None:
            self._closing = True
            return False
        self._line.extend(taken)
        if taken and running:
            self._tell_places()
        return True

    def _tell_places(self) -> None:
        for place, ticket in enumerate(self._line, start=1):
            self._intake.place(ticket, place)
        self._intake.send()

    def _run(self, ticket: Ticket) -> None:
        request = ticket.request
        tokens = self.tokenize(request.prompt)
        if request.cancel.cancelled:
            self._intake.end(ticket, finished_now(ticket, "cancelled",
                                                  n_prompt_tokens=len(tokens)))
            return
        room = self._info.n_ctx - len(tokens)
        if room <= 0:
            raise ModelError(
                f"the prompt has {len(tokens)} tokens, more than the context of {self._info.n_ctx}"
            )
        cached = common_prefix(self._llama._input_ids[: self._llama.n_tokens].tolist(), tokens)
        n_evaluated = len(tokens) - min(cached, len(tokens) - 1)
        sampling = request.sampling
        limit = min(sampling.n_predict, room)
        self._llama.set_seed(sampling.seed if sampling.seed >= 0 else random.getrandbits(31))
        # The high-level Llama builds its sampler's penalty window from this attribute.
        self._llama.last_n_tokens_size = sampling.repeat_last_n
        self._chat_key = request.chat_key
        reply = ReplyText(request.stop)
        reason: StopReason = "length"
        generated = 0
        stream = self._llama.generate(
            tokens, top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p,
            temp=sampling.temp, repeat_penalty=sampling.repeat_penalty,
        )
        try:
            for token in stream:
                if request.cancel.cancelled or self._closing:
                    reason = "cancelled"
                    break
                if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    reason = "eos"
                    break
                generated += 1
                delta = reply.feed(token_piece(self._vocab, token))
                if delta:
                    self._intake.emit(ticket, TextDelta(delta))
                if reply.stopped_by is not None:
                    reason = "stop"
                    break
                if generated >= limit:
                    reason = "length" if limit == sampling.n_predict else "context"
                    break
                self._take(block=False)  # newcomers hear their place while this one runs
                self._intake.send()
        finally:
            stream.close()
        tail = reply.finish()
        if tail:
            self._intake.emit(ticket, TextDelta(tail))
        self._intake.end(ticket, finished_now(
            ticket, reason, text=reply.text, n_prompt_tokens=len(tokens),
            n_evaluated=n_evaluated, n_generated=generated,
        ))

    def _read_info(self, options: EngineOptions) -> ModelInfo:
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
