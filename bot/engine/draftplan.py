"""How many drafted tokens a step of the pool checks (speculative decoding's policy, pure).

Checking a drafted token costs a token's share of a step; it pays when the token is likely to
be the one the model writes. `Acceptance` keeps how often guesses of each kind were accepted
lately (a chat's own rates lean on the pool's until the chat has some), `StepCost` what a step
costs, fitted to the steps measured, and `plan_depth` picks the number of drafted tokens that
makes the most tokens per second of a step. With one KV stream per slot, llama.cpp makes one
pass over the weights for each distinct number of tokens the sequences of a step hold, so the
chats of a step check as many tokens each, padding a short draft with FILLER guesses when that
costs less than another pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bot.engine.ngram import LONGEST, RESYNC

FILLER = 0
STREAK = LONGEST
"""An n-gram guess made while the chat's last STREAK tokens were all guessed right is a kind of
its own (its run's length + LONGEST): deep in a quoted passage even a one-token run's guess
nearly always stands, at a passage's start a short run's guess seldom does."""
MODEL_GUESS = 2 * LONGEST + 1
KINDS = RESYNC + 1
"""Kinds of guess: FILLER (only there to even out a step), 1..LONGEST (followed a run of that
many of the chat's tokens), LONGEST+1..2*LONGEST (the same in a streak), MODEL_GUESS (a draft
model's), RESYNC (a copy taken up again past an edit, `bot.engine.ngram`)."""
FIRST_RATES = (0.02, 0.2, 0.5, 0.7, 0.8, 0.6, 0.8, 0.9, 0.95, 0.6, 0.7)
"""What the pool assumes of each kind of guess before it has seen any checked: about what the
demo model's greedy replies made of them on quoting and chat workloads (after a run of 4 of the
chat's tokens 95-100% stood; after one token 18% outside a streak, 67-93% in one). Kinds that
are not drafted are still learned: a chat's next token is compared with the guess made for it
whether it was checked or not."""


class Acceptance:
    """How often guesses of each kind were accepted lately: a chat's (leaning on the pool's,
    until its own were checked a few times) or the pool's."""

    def __init__(self, pool: Acceptance | None = None, *, memory: float, weight: float = 2.0
                 ) -> None:
        """`memory`: what is left of an observation after one `age()`; `weight`: how many
        observations the prior (the pool's rates, or FIRST_RATES) counts for."""
        self._pool = pool
        self._memory = memory
        self._weight = weight
        self._accepted = [0.0] * KINDS
        self._rejected = [0.0] * KINDS

    def rate(self, kind: int) -> float:
        """The chance that a guess of this kind is the token the model writes."""
        prior = self._pool.rate(kind) if self._pool is not None else FIRST_RATES[kind]
        accepted = self._accepted[kind]
        return (accepted + self._weight * prior) / (accepted + self._rejected[kind] + self._weight)

    def record(self, kinds: Sequence[int], accepted: int, rejected: bool) -> None:
        """Guesses of these kinds were checked: the first `accepted` stood, and the next was
        rejected if `rejected` (the pool's rates learn it too)."""
        for kind in kinds[:accepted]:
            self._accepted[kind] += 1
        if rejected:
            self._rejected[kinds[accepted]] += 1
        if self._pool is not None:
            self._pool.record(kinds, accepted, rejected)

    def age(self) -> None:
        """What was seen counts a little less: a chat that stopped drafting comes back to the
        pool's rates, and tries again."""
        memory = self._memory
        self._accepted = [count * memory for count in self._accepted]
        self._rejected = [count * memory for count in self._rejected]


Row = tuple[int, int]
"""One sequence's part of a step: (tokens, position of the first)."""


class StepCost:
    """Seconds of a decode step: `pass_seconds` for each pass over the weights, `token_seconds`
    for each token, and `context_seconds` for each thousand cached tokens a token attends to
    (attention grows with a chat's length: at a few hundred tokens it is a drafted token's
    largest cost on a small model), fitted by least squares to the steps measured (recent
    ones count most; the first estimate, measured at start, never drops out entirely)."""

    def __init__(self, pass_seconds: float, token_seconds: float, context_seconds: float = 0.0,
                 *, memory: float = 0.98, learn: bool = True) -> None:
        """`learn`: whether measured steps refine the first estimate."""
        self.pass_seconds = max(pass_seconds, 1e-5)
        self.token_seconds = max(token_seconds, 0.005 * self.pass_seconds)
        self.context_seconds = max(context_seconds, 0.0)
        self._memory = memory
        self._learn = learn
        # The normal equations' sums (x x^T, x y) of the first estimate (three steps' worth:
        # one token and nine at position 0, one token at position 1000) and of those measured.
        self._first = _sums([(1, 1, 0.0), (1, 9, 0.0), (1, 1, 1.0)], self.seconds)
        self._xx = np.zeros((3, 3))
        self._xy = np.zeros(3)

    def seconds(self, passes: int, tokens: int, context: float = 0.0) -> float:
        """A step of `passes` passes and `tokens` tokens whose positions sum to `context`
        thousand."""
        return (self.pass_seconds * passes + self.token_seconds * tokens
                + self.context_seconds * context)

    def of(self, rows: Sequence[Row]) -> float:
        """The seconds of a step of these rows."""
        return self.seconds(*shape(rows))

    def observe(self, rows: Sequence[Row], seconds: float) -> None:
        """A step of these rows took `seconds`."""
        if not self._learn or seconds <= 0 or not rows:
            return
        x = np.array(shape(rows))
        # A step that another process slowed down says little about what a step costs: the
        # slower than expected it was, the less it counts.
        w = min(1.0, 2 * self.seconds(*x) / seconds)
        self._xx = self._xx * self._memory + w * np.outer(x, x)
        self._xy = self._xy * self._memory + w * x * seconds
        first_xx, first_xy = self._first
        fitted = _fit(self._xx + first_xx, self._xy + first_xy)
        if fitted is not None:
            self.pass_seconds, token_seconds, self.context_seconds = fitted
            self.token_seconds = max(token_seconds, 0.005 * self.pass_seconds)


def _fit(xx: NDArray[np.float64], xy: NDArray[np.float64]) -> tuple[float, float, float] | None:
    """The least-squares costs (pass, token, context) of these normal equations, attention
    taken as free if the fit finds it negative; None if no fit has positive pass and token
    costs."""
    for free in (3, 2):
        try:
            solved = np.linalg.solve(xx[:free, :free], xy[:free])
        except np.linalg.LinAlgError:
            continue
        pass_seconds, token_seconds, context_seconds = (*(float(v) for v in solved), 0.0)[:3]
        if pass_seconds > 0 and token_seconds > 0 and context_seconds >= 0:
            return pass_seconds, token_seconds, context_seconds
    return None


def shape(rows: Sequence[Row]) -> tuple[int, int, float]:
    """(passes, tokens, context) of a step of these rows: with one KV stream per slot, a pass
    over the weights for each distinct row length; each token attends to the cache before
    it."""
    lengths = {n for n, _ in rows}
    context = sum(n * (position + (n - 1) / 2) for n, position in rows) / 1000
    return len(lengths), sum(n for n, _ in rows), context


def _sums(
    steps: Sequence[tuple[int, int, float]], seconds: Callable[[int, int, float], float]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    xx = np.zeros((3, 3))
    xy = np.zeros(3)
    for step in steps:
        x = np.array(step, dtype=np.float64)
        xx += np.outer(x, x)
        xy += x * seconds(*step)
    return xx, xy


@dataclass(frozen=True)
class Depth:
    """How many drafted tokens each generating chat of a step checks."""

    tokens: int = 0
    padded: bool = False
    """Whether a chat with a shorter draft fills up to `tokens` with FILLER guesses (else it
    checks all of its own and no more)."""


def plan_depth(
    rates: Sequence[Sequence[float]], positions: Sequence[int], filler: float,
    others: Sequence[Row], cost: StepCost, room: int, *, least: int = 0,
) -> Depth:
    """The depth that makes the most tokens per second of the step.

    `rates[j]`: for each token of chat j's draft, the chance that it is accepted (the tokens
    before it being accepted); `positions[j]`: where chat j's next token goes in its cache;
    `filler`: the chance of a FILLER guess; `others`: the step's other rows (prompts, chats
    that do not draft); `room`: drafted tokens the batch has room for; `least`: 1 when the
    step checks a guess anyway (then drafting nothing is not the choice to beat).
    """
    chats = len(rates)
    # gains[j][k]: tokens chat j is expected to gain by checking its first k guesses;
    # reach[j][k]: the chance that all of them stand.
    gains, reach = [], []
    for chat in rates:
        sums, chances = [0.0], [1.0]
        for rate in chat:
            chances.append(chances[-1] * rate)
            sums.append(sums[-1] + chances[-1])
        gains.append(sums)
        reach.append(chances)
    fills = [0.0]
    deepest = max((len(chat) for chat in rates), default=0)
    for k in range(1, deepest + 1):
        fills.append(fills[-1] + filler ** k)
    best = Depth()
    best_rate = chats / cost.of([*((1, at) for at in positions), *others]) if not least else 0.0
    for depth in range(max(1, least), deepest + 1):
        for padded in (False, True):
            gain = 0.0
            rows = list(others)
            for chat, at, gain_of, reach_of in zip(rates, positions, gains, reach, strict=True):
                own = min(depth, len(chat))
                gain += gain_of[own]
                if padded:
                    gain += reach_of[own] * fills[depth - own]
                rows.append((1 + (depth if padded else own), at))
            if sum(n for n, _ in rows) - sum(n for n, _ in others) - chats > room:
                continue
            rate = (chats + gain) / cost.of(rows)
            if rate > best_rate * 1.0001:
                best, best_rate = Depth(depth, padded), rate
    return best
