"""Which drafted tokens stand (speculative decoding's check, pure).

A generating chat's row in a step holds the token it sampled last and the tokens drafted after
it, each with its logits. The positions are sampled in order, each from the model's own logits
with the reply's whole sampler chain (penalties, top-k/p, min-p, temperature, the seeded draw),
exactly as the steps without drafts would sample them one by one; a drafted token stands only
while it is the token sampled before it, and the first disagreement (or the reply's end) stops
the check. So the reply is the one generation without drafts would write: every position
sampled here is a position that would have been sampled, with the same logits (up to the
rounding of a wider batch), the same tokens before it and the sampler chain in the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.engine.base import StopReason


@dataclass(frozen=True)
class Verdict:
    """What checking one chat's row decided."""

    sampled: tuple[int, ...]
    """The tokens chosen, one for each position checked, in order: the reply's next tokens."""
    reason: StopReason | None
    """Why the reply ended during the check (None: it goes on after `sampled[-1]`)."""
    accepted: int
    """Drafted tokens that were the token sampled before them."""
    rejected: bool
    """Whether a drafted token was checked and was not the token sampled (a cancel, or the
    reply ending at an accepted token, rejects none)."""

    @property
    def kept(self) -> int:
        """Tokens of the row that stay in the slot's cache: those whose next token was chosen
        (the row's first token always stays, as it would without drafts). The rest, drafts the
        model did not write, leave it."""
        return max(1, len(self.sampled))


def verify_drafts(
    drafts: Sequence[int],
    choose: Callable[[int], int | None],
    feed: Callable[[int], StopReason | None],
) -> Verdict:
    """Check `drafts`, the tokens drafted after a row's first token.

    `choose(i)` is the token at row position i (sampled from that position's logits, or a
    token the reply must take instead), or None when the reply was cancelled before it;
    `feed(token)` gives the chosen token to the reply and says why it ends, if it does.
    Positions are chosen from 0 on while the previous choice was the draft there.
    """
    sampled: list[int] = []
    accepted = 0
    rejected = False
    reason: StopReason | None = None
    for position in range(len(drafts) + 1):
        token = choose(position)
        if token is None:
            reason = "cancelled"
            break
        sampled.append(token)
        drafted = position < len(drafts)
        hit = drafted and token == drafts[position]
        accepted += hit
        rejected = drafted and not hit
        reason = feed(token)
        if reason is not None or not hit:
            break
    return Verdict(tuple(sampled), reason, accepted, rejected)
