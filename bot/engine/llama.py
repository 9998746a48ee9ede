"""The simple engine: one chat at a time on llama-cpp-python's high-level `Llama`.

The model is not thread-safe, so every call that touches its context runs on one worker thread;
requests come and go through the shared `Intake`, whose `RequestQueue` starts one at a time
(fair between chats, with places told as for the pool). llama.cpp releases the GIL
while it computes, so the event loop stays responsive during a decode. `Llama` keeps one
sequence: a chat that follows another evaluates its whole prompt again. The pool engine
(`bot.engine.pool`) is the one for many chats; this one keeps the high-level library's
behaviour, for comparison.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.engine.base import MemoryReport, SlotReport, StopReason
from bot.engine.intake import Intake
from bot.engine.local import LocalEngine
from bot.engine.native import describe_model, kv_bytes_per_token
from bot.engine.reply import ReplyStream, closing_tokens
from bot.engine.requests import Ticket, finished_now
from bot.engine.slots import common_prefix
from bot.engine.tokens import PromptTokenizer, SampledPieces
from bot.errors import ModelError
from bot.i18n import _
from bot.llama.cpu import physical_cores
from bot.llama.loading import check_model_file, high_level_model_params, route_llama_log

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
            raise ModelError(_(
                "cannot load model {path}: {error} "
                "(is it a complete GGUF file of a supported architecture?)",
                path=options.model_path, error=exc,
            )) from exc
        model = self._llama._model
        self._tokenize = PromptTokenizer(model.vocab)
        self._pieces = SampledPieces(model.vocab)
        self._info = describe_model(model.model, model.vocab, options.model_path,
                                    n_ctx=self._llama.n_ctx())
        self._kv_bytes_per_token = kv_bytes_per_token(model.model, "f16")
        self._intake = Intake(max_queue=options.max_queue, capacity=1)
        self._chat_key: str | None = None
        """The chat whose tokens the context holds."""
        self._running = False
        self._thread = threading.Thread(target=self._work, name="llama-worker", daemon=True)
        self._thread.start()
        log.info(
            "model loaded: %s (%s, trained context %d, context %d, %d threads)",
            self._info.name, options.model_path, self._info.n_ctx_train, self._info.n_ctx, threads,
        )

    @staticmethod
    def _load(llama_cpp: Any, options: EngineOptions, n_ctx: int, threads: int) -> Any:
        with high_level_model_params():
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
        """One context of f16 keys and values holding one chat at a time."""
        per_token = self._kv_bytes_per_token
        tokens = int(self._llama.n_tokens)
        state = "generating" if self._running else "idle" if self._chat_key else "empty"
        slot = SlotReport(0, self._chat_key, state, tokens, tokens * per_token)
        return MemoryReport(kv_type="f16", kv_bytes_allocated=per_token * self._info.n_ctx,
                            kv_bytes_used=slot.kv_bytes, slots=(slot,))

    async def forget(self, chat_key: str) -> None:
        """Drop the context's tokens if they are the chat's (the simple engine saves nothing)."""
        await self._intake.on_worker(lambda: self._forget(chat_key))

    def _forget(self, chat_key: str) -> None:  # on the worker thread, between requests
        if self._chat_key == chat_key:
            self._llama.reset()
            self._llama._ctx.kv_cache_clear()
            self._chat_key = None

    def _free(self) -> None:
        self._llama.close()

    # -- worker thread ----------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while (taken := self._intake.take(block=True)) is not None:
                for ticket in taken:  # one at a time: the queue starts no more
                    self._running = True
                    try:
                        self._run(ticket)
                    except Exception as exc:  # delivered to the waiting coroutine, which raises it
                        log.exception("generation failed for chat %s", ticket.chat_key)
                        self._intake.end(ticket, exc)
                    finally:
                        self._running = False
                    self._intake.send(force=True)
        finally:
            self._intake.drain()
            self._intake.send(force=True)

    def _run(self, ticket: Ticket) -> None:
        request = ticket.request
        tokens = self.tokenize(request.prompt)
        if request.cancel.cancelled:
            self._intake.end(ticket, finished_now(ticket, "cancelled", text="",
                                                  n_prompt_tokens=len(tokens)))
            return
        room = self._info.n_ctx - len(tokens)
        if room <= 0:
            raise ModelError(
                f"the prompt has {len(tokens)} tokens, more than the context of {self._info.n_ctx}"
            )
        cached = common_prefix(self._llama._input_ids[: self._llama.n_tokens].tolist(), tokens)
        reply = ReplyStream(self._intake, ticket, n_prompt=len(tokens),
                            n_evaluated=len(tokens) - min(cached, len(tokens) - 1), room=room,
                            closing=closing_tokens(self._llama._model.vocab, request))
        self._llama.set_seed(reply.seed)
        # `Llama` builds each generation's sampler chain with this penalty window.
        self._llama.last_n_tokens_size = request.sampling.repeat_last_n
        self._chat_key = request.chat_key
        self._intake.end(ticket, reply.close(self._generate(ticket, reply, tokens)))

    def _generate(self, ticket: Ticket, reply: ReplyStream, tokens: list[int]) -> StopReason:
        """Sample into the reply until it ends. Tokens the reply must feed itself (a thinking
        block's closing) are added to what the model has read, and `Llama` goes on after them
        (it evaluates only what its cache does not hold)."""
        request = ticket.request
        sampling = request.sampling
        read = list(tokens)
        while (forced := reply.forced_token()) is not None:  # a budget of 0: closed at once
            read.append(forced)
            if (reason := reply.feed(self._pieces(forced))) is not None:
                return reason
        while True:
            stream = self._llama.generate(
                read, top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p,
                temp=sampling.temp, repeat_penalty=sampling.repeat_penalty,
            )
            try:
                for token in stream:
                    if request.cancel.cancelled or self._intake.closed:
                        return "cancelled"
                    read.append(token)
                    reason = reply.feed(self._pieces(token))
                    sampled = len(read)
                    while reason is None and (forced := reply.forced_token()) is not None:
                        read.append(forced)
                        reason = reply.feed(self._pieces(forced))
                    if reason is not None:
                        return reason
                    self._intake.send()
                    if len(read) > sampled:
                        break  # tokens were fed: generation goes on after them
                else:
                    return "length"
            finally:
                stream.close()


__all__ = ["EngineOptions", "LlamaEngine", "physical_cores"]
