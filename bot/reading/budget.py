"""Choosing a question's passages within its token budget (`document_tokens`): the best ones
that fit, counted as the model will read them (the whole block, labels and frame included),
so a question about a 200-page document costs no more prompt tokens than the budget."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from bot.reading.context import FramedPassage, passages_block

Count = Callable[[str], Awaitable[int]]
"""Tokens a text takes for the running model."""
MAX_TRIES = 12
"""Candidates tried at most: each try tokenizes the block once."""
ROOM_LEFT = 24
"""Tokens of budget below which no further passage is tried (none would fit)."""


async def choose_passages(
    ranked: Sequence[FramedPassage], *, budget: int, count: Count
) -> tuple[list[FramedPassage], int]:
    """The passages to give the model, best first, and the tokens their block takes (at most
    `budget`). Each candidate in rank order joins if the block still fits; where not even the
    best one fits alone, its beginning does (cut at a line, or within its only line)."""
    chosen: list[FramedPassage] = []
    used = 0
    for tried, passage in enumerate(ranked):
        if tried >= MAX_TRIES or (chosen and budget - used < ROOM_LEFT):
            break
        tokens = await count(passages_block([*chosen, passage]))
        if tokens <= budget:
            chosen.append(passage)
            used = tokens
    if chosen or not ranked:
        return chosen, used
    cut = await _cut_to_fit(ranked[0], budget=budget, count=count)
    if cut is None:
        return [], 0
    return [cut], await count(passages_block([cut]))


async def _cut_to_fit(passage: FramedPassage, *, budget: int, count: Count) -> FramedPassage | None:
    """The longest beginning of `passage` whose block fits `budget` (binary search on its
    characters), None if not even a few words do."""
    low, high = 0, len(passage.text)
    while low < high:
        middle = (low + high + 1) // 2
        trial = FramedPassage(passage.label, passage.text[:middle] + " …")
        if await count(passages_block([trial])) <= budget:
            low = middle
        else:
            high = middle - 1
    if low < 16:
        return None
    return FramedPassage(passage.label, passage.text[:low] + " …")
