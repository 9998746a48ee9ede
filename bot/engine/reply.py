"""One reply as it is generated, the same in both local engines: each sampled token's bytes
become text sent to the request, until generation ends, a stop string appears or the length
limit is reached; then the text held back goes out and the reply's `Finished` is made.

A thinking model's reply is split as it comes (`bot.core.thinking`): the thinking goes out as
thinking deltas, and when it reaches the request's budget the reply asks its engine to feed the
tokens that close the block (`forced_token`) instead of sampling, so the model answers. The
length limit (-n) counts the answer alone."""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

from bot.core.textstream import ReplyText
from bot.core.thinking import Part, ThinkingSplitter
from bot.engine.base import Finished, GenerationRequest, StopReason, TextDelta
from bot.engine.intake import Intake
from bot.engine.requests import Ticket, finished_now
from bot.engine.tokens import tokenize_text


def closing_tokens(vocab: Any, request: GenerationRequest) -> list[int]:
    """The tokens an engine feeds to close the request's thinking block (its tags' closing
    text, control tokens allowed: Qwen3's `</think>` is one token); none for a request that
    does not split its thinking."""
    if request.thinking is None:
        return []
    return tokenize_text(vocab, request.thinking.tags.closing, special=True)


class ReplyStream:
    """The text, token count, length limit and seed of one reply (worker thread only)."""

    def __init__(
        self, intake: Intake, ticket: Ticket, *, n_prompt: int, n_evaluated: int, room: int,
        closing: Sequence[int] = (),
    ) -> None:
        """`n_prompt` tokens in the prompt, of which `n_evaluated` are evaluated (the rest was
        cached); `room` tokens are left in the context after the prompt; `closing`: the tokens
        of the text that closes a thinking block (`ThinkingTags.closing`)."""
        self._intake = intake
        self._ticket = ticket
        request = ticket.request
        self._n_predict = request.sampling.n_predict
        self._text = ReplyText(request.stop)
        thinking = request.thinking
        self._split = (
            ThinkingSplitter(thinking.tags, opened=thinking.opened) if thinking is not None
            else None
        )
        self._budget = thinking.budget if thinking is not None else -1
        self._closing = tuple(closing)
        self._forced: deque[int] = deque()
        self._forcing = 0
        """Tokens of the closing still to be fed (then the block is over, whatever they read)."""
        self.n_prompt = n_prompt
        self.n_evaluated = n_evaluated
        self.room = room
        self.generated = 0
        seed = request.sampling.seed
        self.seed = seed if seed >= 0 else random.getrandbits(31)
        """What the reply samples with: the request's seed, or a random one if it gave none."""
        self._check_budget()

    def forced_token(self) -> int | None:
        """A token the engine must feed next instead of sampling one (the closing of a block
        whose budget ran out), or None: sample."""
        return self._forced.popleft() if self._forced else None

    @property
    def forcing(self) -> bool:
        """Whether tokens the engine must feed are pending (the pool drafts none meanwhile)."""
        return bool(self._forced)

    def feed(self, piece: bytes | None) -> StopReason | None:
        """A sampled (or forced) token's bytes (None: it ends generation); why the reply stops,
        if it does."""
        if piece is None:
            return "eos"
        self.generated += 1
        self._emit(self._text.feed(piece))
        if self._forcing:
            self._forcing -= 1
            if not self._forcing and self._split is not None and self._split.thinking:
                self._send(self._split.end_block())  # the closing did not read as the tag
        self._check_budget()
        if self._text.stopped_by is not None:
            return "stop"
        answered = self._split.n_answer if self._split is not None else self.generated
        if answered >= self._n_predict:
            return "length"
        if self.generated >= self.room:
            return "context"
        return None

    def close(self, reason: StopReason) -> Finished:
        """Send the text held back (a partial character, a possible stop string's start, a
        possible tag's start) and return the reply's `Finished`, for the request's end."""
        self._emit(self._text.finish(), tokens=0)
        split = self._split
        if split is None:
            return finished_now(
                self._ticket, reason, text=self._text.text, n_prompt_tokens=self.n_prompt,
                n_evaluated=self.n_evaluated, n_generated=self.generated,
            )
        self._send(split.finish())
        finished = finished_now(
            self._ticket, reason, text=split.answer, n_prompt_tokens=self.n_prompt,
            n_evaluated=self.n_evaluated, n_generated=self.generated,
        )
        return dataclasses.replace(finished, thinking=split.thought, n_thinking=split.n_thinking)

    def _check_budget(self) -> None:
        split = self._split
        if split is None or self._forcing or not split.budget_spent(self._budget):
            return
        if not self._closing:
            self._send(split.end_block())
            return
        self._forced.extend(self._closing)
        self._forcing = len(self._closing)

    def _emit(self, text: str, *, tokens: int = 1) -> None:
        if self._split is None:
            if text:
                self._intake.emit(self._ticket, TextDelta(text))
            return
        self._send(self._split.feed(text, tokens=tokens))

    def _send(self, parts: list[Part]) -> None:
        for part in parts:
            self._intake.emit(self._ticket, TextDelta(part.text, thinking=part.thinking))
