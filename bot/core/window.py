"""The context window: the system prompt plus the most recent turns that fit a token budget."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot.core.prompt import Prompt, Turn
from bot.core.templates import ChatFormat
from bot.errors import InputTooLong
from bot.i18n import _


@dataclass(frozen=True)
class Window:
    """The prompt sent to the model and which stored turns it holds."""

    prompt: Prompt
    first_turn: int
    """Index into the turns given to `fit_window` of the oldest turn inside the window."""
    n_tokens: int
    budget: int

    def dropped(self) -> int:
        return self.first_turn


async def fit_window(
    chat_format: ChatFormat,
    system: str | None,
    turns: Sequence[Turn],
    *,
    budget: int,
    count_tokens: Callable[[Prompt], Awaitable[int]],
) -> Window:
    """Keep the newest turns whose rendered prompt fits in `budget` tokens.

    The window always starts at a user turn and always holds the last turn (the question being
    answered). Older turns are dropped whole, oldest first. Counting the rendered prompt (rather
    than adding per-turn counts) keeps the template's own markup in the count; a binary search
    over the start keeps it to a handful of tokenizations. `count_tokens` is awaited: a remote
    engine asks its server's tokenizer.
    """
    if not turns:
        raise ValueError("a window needs at least the user's turn")
    starts = [i for i, turn in enumerate(turns) if turn.role == "user"]
    if not starts:
        raise ValueError("a window needs a user turn")

    async def measure(start: int) -> tuple[Prompt, int]:
        prompt = chat_format.render(system, turns[start:])
        return prompt, await count_tokens(prompt)

    # starts[k] grows with k and the prompt shrinks with it: find the smallest k that fits.
    low, high = 0, len(starts) - 1
    best: tuple[int, Prompt, int] | None = None
    while low <= high:
        middle = (low + high) // 2
        prompt, used = await measure(starts[middle])
        if used <= budget:
            best = (starts[middle], prompt, used)
            high = middle - 1
        else:
            low = middle + 1
    if best is None:
        _prompt, used = await measure(starts[-1])
        raise InputTooLong(_(
            "This message is too long for the context window: it needs {used} tokens with the "
            "system prompt, and {budget} are available (/ctx minus /n). Send a shorter message, "
            "shorten /system, or raise /ctx.",
            used=used, budget=budget,
        ))
    start, prompt, used = best
    return Window(prompt=prompt, first_turn=start, n_tokens=used, budget=budget)
