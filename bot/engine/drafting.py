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

from bot.engine.draftplan import (
    FILLER,
    MODEL_GUESS,
    STREAK,
    Acceptance,
    Row,
    StepCost,
    plan_depth,
)
from bot.engine.ngram import LONGEST, Guess, NgramIndex
from bot.engine.slots import Slot, SlotContext
from bot.engine.verify import Verdict

F16_ADVICE = ("drafting over the f16 KV cache checks its rows with flash attention (for replies "
              "token for token those of a pool that does not draft), which on a CPU slows the "
              "steps of several chats over long caches more than drafts win; kv_type = \"q8_0\" "
              "drafts faster but reads long prompts more slowly (documents, follow-ups in long "
              "chats)")
"""What the pool's log and `alpaca-bot doctor` say of drafting over the f16 cache."""

CHAT_MEMORY = 0.9
"""What is left of a chat's observation of its guesses after one of its steps."""
POOL_MEMORY = 0.995
"""The same for the pool's rates, per step of generating chats: a kind of guess whose rate
fell too low to be checked comes back to its first rate (FIRST_RATES) in a few hundred steps
and is tried again, so a pool never stops drafting for good on a few early misses."""


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
        self.guessed: Guess | None = None
        """The guess made for the token the current step samples, checked or not."""
        self.streak = 0
        """How many of the chat's last sampled tokens were the guess made for them."""
        self._index: NgramIndex | None = None

    def ngrams(self) -> NgramIndex:
        """The chat's tokens indexed for lookups (built at the first; a reply that never
        drafts from them never pays for it)."""
        if self._index is None:
            self._index = NgramIndex(self.tokens)
        return self._index

    @property
    def position(self) -> int:
        """Where the token the next step evaluates goes in the chat's cache."""
        return len(self.tokens) - 1

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

    def __init__(self, source: DraftSource, *, most: int, cost: StepCost,
                 lone_token_from: int | None = None) -> None:
        """`lone_token_from`: the cached tokens beyond which llama.cpp computes a token that is
        a step's part alone differently from one in a row (None: never; see
        `slots.LONE_TOKEN_CELLS`)."""
        self.source = source
        self.most = most
        self.cost = cost
        self.lone_token_from = lone_token_from
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
        self, chats: Sequence[tuple[ChatDraft, int]], others: Sequence[Row], room: int
    ) -> list[list[int]]:
        """The tokens each generating chat checks after the one it sampled last.

        `chats`: each with the most tokens it may draft (0: none, at the end of its context
        or reply, or while it feeds tokens it must); `others`: the step's other rows
        (prompts); `room`: drafted tokens the batch has room for.
        """
        self._rates.age()
        for chat, _ in chats:
            chat.acceptance.age()
        drafting = [(chat, self._worth_asking(chat, most)) for chat, most in chats]
        drafting = [(chat, most) for chat, most in drafting if most > 0]
        for chat, _ in chats:
            chat.pending = []
            chat.guessed = None
        if drafting:
            self._plan(chats, drafting, others, room)
        self._no_lone_token(chats, others)
        return [[token for token, _ in chat.pending] for chat, _ in chats]

    def _plan(self, chats: Sequence[tuple[ChatDraft, int]],
              drafting: Sequence[tuple[ChatDraft, int]], others: Sequence[Row],
              room: int) -> None:
        guesses = [self._kinds(chat, own) for (chat, _), own
                   in zip(drafting, self.source.guess(drafting), strict=True)]
        rates = [[chat.acceptance.rate(kind) for _, kind in own]
                 for (chat, _), own in zip(drafting, guesses, strict=True)]
        asking = {id(chat) for chat, _ in drafting}
        still = [(1, chat.position) for chat, _ in chats if id(chat) not in asking]
        # A chat alone past lone_token_from checks a guess anyway (_no_lone_token).
        alone = (self.lone_token_from is not None and len(chats) == 1 and not others
                 and chats[0][0].position + 1 > self.lone_token_from)
        depth = plan_depth(rates, [chat.position for chat, _ in drafting],
                           self._rates.rate(FILLER), [*others, *still], self.cost, room,
                           least=int(alone))
        for (chat, most), own in zip(drafting, guesses, strict=True):
            chat.pending = own[: depth.tokens]
            if depth.padded and len(chat.pending) < min(depth.tokens, most):
                last = chat.pending[-1][0] if chat.pending else chat.tokens[-1]
                chat.pending += [(last, FILLER)] * (min(depth.tokens, most) - len(chat.pending))

    def _no_lone_token(self, chats: Sequence[tuple[ChatDraft, int]],
                       others: Sequence[Row]) -> None:
        """Make sure no chat's token is computed as a step's part alone where that computes
        differently (`lone_token_from`), so that drafting never changes what the model writes.

        llama.cpp evaluates a step in parts: as many tokens of every sequence as the shortest
        row holds, then as many more of each longer one as the next shortest holds, and so on.
        A part is a lone token only at the top, when one chat's row is longer by exactly one
        than all the others: it drops its last guess (its row then ends with the next
        longest), or, with no guess to drop (a chat alone that drafts nothing), checks one
        (its likeliest, or a FILLER)."""
        if self.lone_token_from is None or not chats:
            return
        lengths = sorted([1 + len(chat.pending) for chat, _ in chats] + [n for n, _ in others],
                         reverse=True)
        top, second = lengths[0], (lengths[1] if len(lengths) > 1 else 0)
        if top - second != 1:
            return
        for chat, most in chats:
            if 1 + len(chat.pending) == top and chat.position + top > self.lone_token_from:
                if chat.pending:
                    chat.pending.pop()
                elif most >= 1:
                    chat.pending = [chat.guessed or (chat.tokens[-1], FILLER)]
                return

    @staticmethod
    def _kinds(chat: ChatDraft, guesses: list[Guess]) -> list[Guess]:
        """The guesses with their kinds told apart in a streak (see STREAK); the first is
        remembered, to be compared with the token sampled."""
        if chat.streak >= STREAK:
            guesses = [(token, kind + LONGEST if 1 <= kind <= LONGEST else kind)
                       for token, kind in guesses]
        chat.guessed = guesses[0] if guesses else None
        return guesses

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
        """The chat's row was checked: count its guesses, and add what it sampled.

        A guess that was made but not checked (drafting did not pay) is compared with the
        token sampled all the same: its kind's rate is learned for free, and a kind whose rate
        looked too poor to be checked is checked again once it does better."""
        guesses, chat.pending = chat.pending, []
        guessed, chat.guessed = chat.guessed, None
        if guesses:
            self.drafted += len(guesses)
            self.accepted += verdict.accepted
            chat.acceptance.record([kind for _, kind in guesses], verdict.accepted,
                                   verdict.rejected)
            chat.streak = 0 if verdict.rejected else chat.streak + verdict.accepted
        elif verdict.sampled:
            hit = guessed is not None and verdict.sampled[0] == guessed[0]
            if guessed is not None:
                chat.acceptance.record([guessed[1]], int(hit), not hit)
            chat.streak = chat.streak + 1 if hit else 0
        if verdict.reason is None:
            chat.extend(verdict.sampled)

    def observe(self, rows: Sequence[Row], seconds: float) -> None:
        """A decode of these rows, generating chats' only, took `seconds`."""
        self.cost.observe(rows, seconds)

    def stats(self) -> DraftStats:
        return DraftStats(self.source.name, self.drafted, self.accepted)

    def close(self) -> None:
        self.source.close()


def measure_cost(ctx: SlotContext, *, width: int, repeat: int = 5,
                 budget: float = 0.5) -> StepCost:
    """What a step costs on this context, timed on its first slot: the best of `repeat` decodes
    of one token and of `width` tokens, each with its logits, taken in turns (another process
    only ever slows a decode down), at the cache's start and, when reading a few hundred tokens
    into the cache costs less than about `budget` seconds, after them (what attention adds; on
    a model too slow to read them in time it is learned from the steps of the first replies)."""
    slot = Slot(0)
    token = max(0, ctx.bos)
    _timed_step(ctx, slot, token, 0, 1)  # the first decode pays for starting up
    # Reading the cache full is a prompt's reading (batches of tokens, no logits).
    probe = min(64, ctx.batch_size, ctx.n_ctx - width - 1)
    began = time.perf_counter()
    ctx.decode([(slot.seq_id, 0, _filler(ctx, 0, probe), 0)])
    per_token = (time.perf_counter() - began) / probe
    fill = min(256, int(budget / max(per_token, 1e-6)), ctx.n_ctx - width - 1)
    fill = fill if fill >= 64 else 0
    times: dict[tuple[int, int], float] = {}
    for start in (0, fill) if fill else (0,):
        ctx.clear(slot)
        for done in range(0, start, ctx.batch_size):
            n = min(ctx.batch_size, start - done)
            ctx.decode([(slot.seq_id, done, _filler(ctx, done, n), 0)])
        for _ in range(repeat):
            for n in (1, width):
                seconds = _timed_step(ctx, slot, token, start, n)
                times[n, start] = min(times.get((n, start), float("inf")), seconds)
    ctx.clear(slot)
    token_seconds = (times[width, 0] - times[1, 0]) / (width - 1)
    if not 0 < token_seconds < times[1, 0]:
        token_seconds = times[1, 0] / 10  # a machine too busy to tell: a usual share
    pass_seconds = times[1, 0] - token_seconds
    context_seconds = 0.0
    if fill:
        # Each token of the wide row attends to `fill` tokens more than at the start.
        added = (times[width, fill] - times[width, 0]) / (width * fill / 1000)
        context_seconds = max(0.0, added)
    return StepCost(pass_seconds, token_seconds, context_seconds)


def _filler(ctx: SlotContext, start: int, n: int) -> list[int]:
    """`n` tokens of a made-up text from position `start`: keys that differ, as a real chat's
    do (attention over one token repeated costs less)."""
    return [(ctx.bos + 10 + (start + i) % 500) % ctx.n_vocab for i in range(n)]


def _timed_step(ctx: SlotContext, slot: Slot, token: int, start: int, n: int) -> float:
    """The seconds of a decode of `n` tokens at `start` in `slot` (removed after)."""
    began = time.perf_counter()
    ctx.decode([(slot.seq_id, start, [token] * n, n)])
    seconds = time.perf_counter() - began
    slot.tokens = [token] * (start + n)
    ctx.truncate(slot, start)
    return seconds
