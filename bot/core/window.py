"""The context window: the system prompt plus the most recent turns that fit a token budget,
found from the newest turn back, so that what it costs follows the window, not the history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from bot.core.prompt import Prompt, Turn
from bot.core.templates import ChatFormat
from bot.errors import InputTooLong
from bot.i18n import _


class NoQuestion(ValueError):
    """The turns given hold no user turn: there is nothing to answer."""


@dataclass(frozen=True)
class Window:
    """The prompt sent to the model and the turns it holds."""

    prompt: Prompt
    system: str | None
    """The system text the prompt starts with."""
    turns: tuple[Turn, ...]
    """The turns inside the window, oldest first: the newest `len(turns)` of those given."""
    n_tokens: int
    budget: int
    left_out: bool
    """Older turns exist that the window leaves out."""


async def fit_window(
    chat_format: ChatFormat,
    system: str | None,
    newest_first: AsyncIterator[Turn],
    *,
    budget: int,
    count_tokens: Callable[[Prompt], Awaitable[int]],
) -> Window:
    """Keep the newest turns whose rendered prompt fits in `budget` tokens.

    `newest_first` gives the conversation from its last turn back and is read only as far as
    the search needs. The window always starts at a user turn and always holds the last turn
    (the question being answered). Older turns are dropped whole, oldest first. Counting the
    rendered prompt (rather than adding per-turn counts) keeps the template's own markup in
    the count. The search doubles the number of questions tried until one does not fit, then
    halves the gap: a handful of tokenizations, none much longer than twice the window, however
    long the history. `count_tokens` is awaited: a remote engine asks its server's tokenizer.
    """
    read: list[Turn] = []
    """The turns read so far, newest first."""
    starts: list[int] = []
    """Where in `read` each user turn is: a window of k questions holds read[:starts[k-1]+1]."""
    exhausted = False

    async def reach(k: int) -> int:
        """Read until `k` questions are known (or the turns run out); how many are."""
        nonlocal exhausted
        while len(starts) < k and not exhausted:
            turn = await anext(newest_first, None)
            if turn is None:
                exhausted = True
                break
            read.append(turn)
            if turn.role == "user":
                starts.append(len(read) - 1)
        return len(starts)

    async def measure(k: int) -> tuple[Prompt, int]:
        prompt = chat_format.render(system, read[: starts[k - 1] + 1][::-1])
        return prompt, await count_tokens(prompt)

    if not await reach(1):
        raise NoQuestion("a window needs a user turn")
    prompt, used = await measure(1)
    if used > budget:
        raise InputTooLong(_(
            "This message is too long for the context window: it needs {used} tokens with the "
            "system prompt, and {budget} are available (/ctx minus /n). Send a shorter message, "
            "shorten /system, or raise /ctx.",
            used=used, budget=budget,
        ))
    best = (1, prompt, used)
    # Up by doubling while it fits: `fits` questions fit, `fails` do not (if known).
    fits, fails = 1, 0
    while not fails:
        tried = min(fits * 2, await reach(fits * 2))
        if tried == fits:
            break  # every question fits
        prompt, used = await measure(tried)
        if used <= budget:
            best, fits = (tried, prompt, used), tried
        else:
            fails = tried
    # Then between them: more questions, a longer prompt.
    low, high = fits + 1, fails - 1
    while low <= high:
        middle = (low + high) // 2
        prompt, used = await measure(middle)
        if used <= budget:
            best, low = (middle, prompt, used), middle + 1
        else:
            high = middle - 1
    k, prompt, used = best
    kept = starts[k - 1] + 1
    return Window(prompt=prompt, system=system, turns=tuple(read[:kept][::-1]), n_tokens=used,
                  budget=budget, left_out=len(read) > kept)
