"""A scripted engine for tests: replies queued with `enqueue`, every request kept in `history`.

It honours the parts of the engine contract the chat side relies on: streaming deltas, -n as a
word limit, stop strings, cancellation between tokens, and a bounded queue. A scripted reply may
think (`<think>...</think>`, or a block the prompt opened): its thinking streams as thinking
deltas, -n counts the answer's words alone, and at the request's budget (in words) the engine
closes the block itself and goes on with the script's answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

from bot.core.prompt import Prompt, prompt_text
from bot.core.textstream import ReplyText
from bot.core.thinking import Part, ThinkingSplitter
from bot.engine.base import (
    Finished,
    GenerationEvent,
    GenerationRequest,
    MemoryReport,
    ModelInfo,
    Queued,
    StopReason,
    TextDelta,
)
from bot.errors import EngineBusy


class ScriptedEngine:
    """Streams canned replies word by word; counts one token per 4 characters of prompt."""

    def __init__(
        self,
        *,
        n_ctx: int = 2048,
        n_ctx_train: int = 4096,
        chat_template: str | None = None,
        delay: float = 0.0,
        max_queue: int = 32,
        default_reply: str = "Hello from the scripted model.",
        serial: bool = False,
    ) -> None:
        self._info = ModelInfo(
            path=Path("/models/scripted.gguf"),
            name="scripted",
            n_ctx_train=n_ctx_train,
            n_ctx=n_ctx,
            chat_template=chat_template,
            bos_token="<s>",
            eos_token="</s>",
        )
        self.replies: deque[str] = deque()
        self.history: list[GenerationRequest] = []
        self.delay = delay
        self.default_reply = default_reply
        self.max_queue = max_queue
        self.running = 0
        self.started = asyncio.Event()
        self.serial = serial
        """One reply at a time, the others wait in line and get `Queued` events."""
        self._line: list[object] = []
        self._busy = False
        self.hang = False
        self.cached: dict[str, int] = {}
        """Per chat, the tokens of its last prompt and reply: a follow-up whose prompt is at
        least as long evaluates only the rest (a KV cache's arithmetic, not its checks)."""
        """When set, a reply never finishes on its own (only cancellation ends it)."""
        self.forgotten: list[str] = []
        """Chats whose cache `forget` was asked to drop, in order."""
        self.first_text_at: list[float] = []
        """time.monotonic() when each reply's first text was yielded, in order."""
        self.hold_after_first: asyncio.Event | None = None
        """When given, each reply waits for it after its first text (a model slow to go on)."""

    @property
    def info(self) -> ModelInfo:
        return self._info

    def enqueue(self, *replies: str) -> None:
        self.replies.extend(replies)

    async def count_tokens(self, prompt: Prompt) -> int:
        return len(prompt_text(prompt)) // 4 + 1

    def prompts(self) -> list[str]:
        return [prompt_text(request.prompt) for request in self.history]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if self.running >= self.max_queue:
            raise EngineBusy("The model is busy; try again in a minute.")
        self.running += 1
        me = object()
        holding = False
        try:
            if self.serial:
                self._line.append(me)
                shown = -1
                while self._busy or self._line[0] is not me:
                    ahead = self._line.index(me) + (1 if self._busy else 0)
                    if ahead != shown:
                        shown = ahead
                        yield Queued(ahead)
                    if request.cancel.cancelled:
                        self._line.remove(me)
                        yield Finished(reason="cancelled", text="", n_prompt_tokens=0,
                                       n_evaluated=0, n_generated=0, seconds=0.0)
                        return
                    await asyncio.sleep(0.01)
                self._line.pop(0)
                self._busy = holding = True
            self.history.append(request)
            self.started.set()
            began = time.monotonic()
            text = self.replies.popleft() if self.replies else self.default_reply
            words = text.split(" ")
            reply = ReplyText(request.stop)
            thinking = request.thinking
            split = (ThinkingSplitter(thinking.tags, opened=thinking.opened)
                     if thinking is not None else None)
            reason: StopReason = "eos"
            generated = 0
            index = 0
            emitted = False
            while True:
                if request.cancel.cancelled:
                    reason = "cancelled"
                    break
                if (thinking is not None and split is not None
                        and split.budget_spent(thinking.budget)):
                    # The engine closes the block; the model goes on with its answer.
                    index = _after_block(words, index, thinking.tags.close)
                    generated += 1
                    parts = split.feed(reply.feed(thinking.tags.closing.encode()))
                    parts += split.end_block() if split.thinking else []
                    for part in parts:
                        yield TextDelta(part.text, thinking=part.thinking)
                    continue
                if index >= len(words):
                    if self.hang:
                        await asyncio.sleep(0.01)
                        continue
                    break
                answered = split.n_answer if split is not None else generated
                if answered >= request.sampling.n_predict:
                    reason = "length"
                    break
                piece = (" " if index else "") + words[index]
                index += 1
                generated += 1
                delta = reply.feed(piece.encode())
                parts = split.feed(delta) if split is not None else [Part(delta, False)]
                for part in parts:
                    if not part.text:
                        continue
                    first = not emitted
                    if first:
                        emitted = True
                        self.first_text_at.append(time.monotonic())
                    yield TextDelta(part.text, thinking=part.thinking)
                    if first and self.hold_after_first is not None:
                        await self.hold_after_first.wait()
                if reply.stopped_by:
                    reason = "stop"
                    break
                await asyncio.sleep(self.delay)
            tail = reply.finish()
            parts = [Part(tail, False)] if split is None else split.feed(tail, tokens=0)
            for part in parts + (split.finish() if split is not None else []):
                if part.text:
                    yield TextDelta(part.text, thinking=part.thinking)
            n_prompt = await self.count_tokens(request.prompt)
            cached = self.cached.get(request.chat_key, 0)
            cached = cached if cached <= n_prompt else 0
            self.cached[request.chat_key] = n_prompt + generated
            finished = Finished(
                reason=reason, text=reply.text, n_prompt_tokens=n_prompt,
                n_evaluated=n_prompt - cached, n_generated=generated,
                seconds=time.monotonic() - began,
            )
            if split is not None:
                finished = dataclasses.replace(finished, text=split.answer,
                                               thinking=split.thought, n_thinking=split.n_thinking)
            yield finished
        finally:
            self.running -= 1
            if holding:
                self._busy = False

    async def forget(self, chat_key: str) -> None:
        self.forgotten.append(chat_key)

    def memory_report(self) -> MemoryReport:
        return MemoryReport(kv_type="none", kv_bytes_allocated=0, kv_bytes_used=0, slots=())

    async def aclose(self) -> None:
        return None


def _after_block(words: list[str], index: int, close: str) -> int:
    """Where a script goes on once its thinking block was closed for it: after its own closing
    tag (the word holding it keeps what follows the tag), or at its end."""
    for at in range(index, len(words)):
        if close in words[at]:
            words[at] = words[at].split(close, 1)[1].lstrip("\n")
            return at if words[at] else at + 1
    return len(words)
