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

from bot.engine.ngram import LONGEST

FILLER = 0
MODEL_GUESS = LONGEST + 1
KINDS = MODEL_GUESS + 1
"""Kinds of guess: FILLER (only there to even out a step), 1..LONGEST (followed a run of that
many of the chat's tokens), MODEL_GUESS (a draft model's)."""
FIRST_RATES = (0.02, 0.25, 0.4, 0.5, 0.6, 0.6)
"""What the pool assumes of each kind of guess before it has seen any checked."""


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
            self._pool.age()

    def age(self) -> None:
        """What was seen counts a little less: a chat that stopped drafting comes back to the
        pool's rates, and tries again."""
        memory = self._memory
        self._accepted = [count * memory for count in self._accepted]
        self._rejected = [count * memory for count in self._rejected]


class StepCost:
    """Seconds of a decode step: `pass_seconds` for each pass over the weights plus
    `token_seconds` for each token, fitted by least squares to the steps measured (recent ones
    count most; the first estimate, measured at start, never drops out entirely)."""

    def __init__(self, pass_seconds: float, token_seconds: float, *, memory: float = 0.98,
                 learn: bool = True) -> None:
        """`learn`: whether measured steps refine the first estimate."""
        self.pass_seconds = max(pass_seconds, 1e-5)
        self.token_seconds = min(max(token_seconds, 0.005 * self.pass_seconds),
                                 2 * self.pass_seconds)
        self._memory = memory
        self._learn = learn
        # The normal equations' sums (x x^T as [pp, pt, tt], x y as [p y, t y]) of the first
        # estimate (two steps' worth) and of the steps measured.
        self._first = _sums([(1, 1), (1, 9)], self.seconds)
        self._xx = [0.0, 0.0, 0.0]
        self._xy = [0.0, 0.0]

    def seconds(self, passes: int, tokens: int) -> float:
        return self.pass_seconds * passes + self.token_seconds * tokens

    def observe(self, passes: int, tokens: int, seconds: float) -> None:
        """A step of `passes` passes over the weights and `tokens` tokens took `seconds`."""
        if not self._learn or seconds <= 0:
            return
        # A step that another process slowed down says little about what a step costs: the
        # slower than expected it was, the less it counts.
        w = min(1.0, 2 * self.seconds(passes, tokens) / seconds)
        m = self._memory
        xx, xy = self._xx, self._xy
        self._xx = [xx[0] * m + w * passes * passes, xx[1] * m + w * passes * tokens,
                    xx[2] * m + w * tokens * tokens]
        self._xy = [xy[0] * m + w * passes * seconds, xy[1] * m + w * tokens * seconds]
        (first_xx, first_xy) = self._first
        a, b, c = (x + y for x, y in zip(self._xx, first_xx, strict=True))
        p, q = (x + y for x, y in zip(self._xy, first_xy, strict=True))
        determinant = a * c - b * b
        if determinant <= 1e-9 * a * c:
            return
        pass_seconds = (p * c - q * b) / determinant
        if pass_seconds > 0:
            token_seconds = (a * q - b * p) / determinant
            self.pass_seconds = pass_seconds
            self.token_seconds = min(max(token_seconds, 0.005 * pass_seconds), 2 * pass_seconds)


def _sums(
    steps: Sequence[tuple[int, int]], seconds: Callable[[int, int], float]
) -> tuple[list[float], list[float]]:
    xx = [0.0, 0.0, 0.0]
    xy = [0.0, 0.0]
    for passes, tokens in steps:
        y = seconds(passes, tokens)
        xx = [xx[0] + passes * passes, xx[1] + passes * tokens, xx[2] + tokens * tokens]
        xy = [xy[0] + passes * y, xy[1] + tokens * y]
    return xx, xy


@dataclass(frozen=True)
class Depth:
    """How many drafted tokens each generating chat of a step checks."""

    tokens: int = 0
    padded: bool = False
    """Whether a chat with a shorter draft fills up to `tokens` with FILLER guesses (else it
    checks all of its own and no more)."""


def plan_depth(
    rates: Sequence[Sequence[float]], filler: float, others: Sequence[int], cost: StepCost,
    room: int,
) -> Depth:
    """The depth that makes the most tokens per second of the step.

    `rates[j]`: for each token of chat j's draft, the chance that it is accepted (the tokens
    before it being accepted); `filler`: that of a FILLER guess; `others`: the tokens of the
    step's other rows (prompts); `room`: drafted tokens the batch has room for.
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
    best_rate = chats / cost.seconds(len({1, *others}), chats + sum(others))
    for depth in range(1, deepest + 1):
        for padded in (False, True):
            gain = 0.0
            lengths = []
            for chat, gain_of, reach_of in zip(rates, gains, reach, strict=True):
                own = min(depth, len(chat))
                gain += gain_of[own]
                if padded:
                    gain += reach_of[own] * fills[depth - own]
                lengths.append(1 + (depth if padded else own))
            if sum(lengths) - chats > room:
                continue
            seconds = cost.seconds(len({*lengths, *others}), sum(lengths) + sum(others))
            rate = (chats + gain) / seconds
            if rate > best_rate * 1.0001:
                best, best_rate = Depth(depth, padded), rate
    return best
