"""Speculative decoding in the pool: each generating chat's likely next tokens are drafted
cheaply and checked in the step that evaluates its last sampled token, so a step can write
several tokens of a chat for little more than the cost of one.

`Drafting` is the decoder's part of it: the drafts of a step (from the chat's own tokens,
`bot.engine.ngram`, or a small draft model, `bot.engine.draftmodel`), as many as pay
(`bot.engine.draftplan`), what the checks decided (`bot.engine.verify`), and the counts that
/metrics and /settings show. Worker thread only, but for `DraftStats`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bot.engine.draftplan import FILLER, MODEL_GUESS, Acceptance, StepCost, plan_depth
from bot.engine.ngram import Guess, NgramIndex
from bot.engine.slots import Slot, SlotContext
from bot.engine.verify import Verdict

CHAT_MEMORY = 0.9
"""What is left of a chat's observation of its guesses after one of its steps."""
POOL_MEMORY = 0.995
"""The same for the pool's rates, per guess checked in any chat."""


@dataclass(frozen=True)
class DraftStats:
    """What an engine's drafting has done since it started."""

    source: str
    """"ngram", or the draft model's file name."""
    drafted: int
    """Drafted tokens checked."""
    accepted: int
    """Of those, the tokens the model wrote too."""

    @property
    def rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None


@runtime_checkable
class Drafts(Protocol):
    """An engine that drafts tokens (speculative decoding): /metrics and /settings show how many
    it drafted and how many stood."""

    def draft_stats(self) -> DraftStats | None:
        """The counts, or None when drafting is off."""
        ...


class ChatDraft:
    """One reply's drafting: the chat's tokens so far (prompt and sampled tokens, the one the
    next step evaluates included), and how its guesses did."""

    def __init__(self, tokens: Sequence[int], seq_id: int, acceptance: Acceptance) -> None:
        self.seq_id = seq_id
        self.tokens = list(tokens)
        self.acceptance = acceptance
        self.pending: list[Guess] = []
        """The guesses the current step checks."""
        self._index: NgramIndex | None = None

    def ngrams(self) -> NgramIndex:
        """The chat's tokens indexed for lookups (built at the first; a reply that never
        drafts from them never pays for it)."""
        if self._index is None:
            self._index = NgramIndex(self.tokens)
        return self._index

    def extend(self, tokens: Sequence[int]) -> None:
        self.tokens.extend(tokens)
        if self._index is not None:
            self._index.extend(tokens)


class DraftSource(Protocol):
    """Where drafts come from."""

    name: str
    free: bool
    """Whether guessing costs next to nothing (else guesses are asked for only as deep as
    they are likely to stand)."""

    def guess(self, chats: Sequence[tuple[ChatDraft, int]]) -> list[list[Guess]]:
        """For each (chat, n): up to n guesses of its next tokens after `chat.tokens`."""
        ...

    def warm_up(self) -> None: ...

    def close(self) -> None: ...


class NgramSource:
    """Drafts from each chat's own tokens."""

    name = "ngram"
    free = True

    def guess(self, chats: Sequence[tuple[ChatDraft, int]]) -> list[list[Guess]]:
        return [chat.ngrams().guess(most) for chat, most in chats]

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass


class Drafting:
    """The drafts of each step of one pool, and what came of them."""

    def __init__(self, source: DraftSource, *, most: int, cost: StepCost) -> None:
        self.source = source
        self.most = most
        self.cost = cost
        self._rates = Acceptance(memory=POOL_MEMORY)
        self.drafted = 0
        self.accepted = 0

    def warm_up(self, ctx: SlotContext) -> None:
        """Measure what a step costs on the pool's context and warm the draft source up (on
        the worker thread, before the first chat)."""
        self.cost = measure_cost(ctx, width=1 + self.most)
        self.source.warm_up()

    def chat(self, tokens: Sequence[int], seq_id: int) -> ChatDraft:
        """A reply's drafting, its prompt being `tokens` in slot `seq_id`."""
        return ChatDraft(tokens, seq_id, Acceptance(self._rates, memory=CHAT_MEMORY))

    def propose(
        self, chats: Sequence[tuple[ChatDraft, int]], others: Sequence[int], room: int
    ) -> list[list[int]]:
        """The tokens each generating chat checks after the one it sampled last.

        `chats`: each with the most tokens it may draft (0: none, at the end of its context
        or reply, or while it feeds tokens it must); `others`: the tokens of the step's other
        rows (prompts); `room`: drafted tokens the batch has room for.
        """
        for chat, _ in chats:
            chat.acceptance.age()
        drafting = [(chat, self._worth_asking(chat, most)) for chat, most in chats]
        drafting = [(chat, most) for chat, most in drafting if most > 0]
        for chat, _ in chats:
            chat.pending = []
        if not drafting:
            return [[] for _ in chats]
        guesses = self.source.guess(drafting)
        rates = [[chat.acceptance.rate(kind) for _, kind in own]
                 for (chat, _), own in zip(drafting, guesses, strict=True)]
        still = [1] * (len(chats) - len(drafting))  # rows of chats that do not draft
        depth = plan_depth(rates, self._rates.rate(FILLER), [*others, *still], self.cost, room)
        for (chat, most), own in zip(drafting, guesses, strict=True):
            chat.pending = own[: depth.tokens]
            if depth.padded and len(chat.pending) < min(depth.tokens, most):
                last = chat.pending[-1][0] if chat.pending else chat.tokens[-1]
                chat.pending += [(last, FILLER)] * (min(depth.tokens, most) - len(chat.pending))
        return [[token for token, _ in chat.pending] for chat, _ in chats]

    def _worth_asking(self, chat: ChatDraft, most: int) -> int:
        most = min(most, self.most)
        if self.source.free:
            return most
        # A guess that costs a pass of the draft model is made only while the chance that it
        # and those before it stand is fair.
        rate = chat.acceptance.rate(MODEL_GUESS)
        depth, chance = 0, rate
        while depth < most and chance >= 0.25:
            depth += 1
            chance *= rate
        return depth

    def settle(self, chat: ChatDraft, verdict: Verdict) -> None:
        """The chat's row was checked: count its guesses, and add what it sampled."""
        guesses, chat.pending = chat.pending, []
        if guesses:
            self.drafted += len(guesses)
            self.accepted += verdict.accepted
            chat.acceptance.record([kind for _, kind in guesses], verdict.accepted,
                                   verdict.rejected)
        if verdict.reason is None:
            chat.extend(verdict.sampled)

    def observe(self, lengths: Sequence[int], seconds: float) -> None:
        """A decode of rows of these lengths took `seconds`."""
        self.cost.observe(len(set(lengths)), sum(lengths), seconds)

    def stats(self) -> DraftStats:
        return DraftStats(self.source.name, self.drafted, self.accepted)

    def close(self) -> None:
        self.source.close()


def measure_cost(ctx: SlotContext, *, width: int, repeat: int = 5) -> StepCost:
    """What a step costs on this context, timed on its first slot (empty, at start): the best
    of `repeat` decodes of one token and of `width` tokens, each with its logits, taken in
    turns (another process only ever slows a decode down)."""
    slot = Slot(0)
    token = max(0, ctx.bos)
    best = {1: float("inf"), width: float("inf")}
    for _ in range(repeat):
        for n in best:
            started = time.perf_counter()
            ctx.decode([(0, 0, [token] * n, n)])
            best[n] = min(best[n], time.perf_counter() - started)
            ctx.clear(slot)
    token_seconds = (best[width] - best[1]) / (width - 1)
    if not 0 < token_seconds < best[1]:
        token_seconds = best[1] / 10  # a machine too busy to tell: a usual share
    return StepCost(best[1] - token_seconds, token_seconds)
