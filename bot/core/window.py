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
    turns = _Read(newest_first)

    async def measure(questions: int) -> _Fit:
        prompt = chat_format.render(system, turns.window(questions))
        return _Fit(questions, prompt, await count_tokens(prompt))

    if not await turns.reach(1):
        raise NoQuestion("a window needs a user turn")
    last = await measure(1)
    if last.tokens > budget:
        raise InputTooLong(_(
            "This message is too long for the context window: it needs {used} tokens with the "
            "system prompt, and {budget} are available (/ctx minus /n). Send a shorter message, "
            "shorten /system, or raise /ctx.",
            used=last.tokens, budget=budget,
        ))
    best = await _widest(turns, measure, budget, last)
    kept = turns.window(best.questions)
    return Window(prompt=best.prompt, system=system, turns=tuple(kept), n_tokens=best.tokens,
                  budget=budget, left_out=len(turns.read) > len(kept))


@dataclass(frozen=True)
class _Fit:
    questions: int
    prompt: Prompt
    tokens: int


class _Read:
    """The turns read so far, newest first, and where the questions among them are."""

    def __init__(self, newest_first: AsyncIterator[Turn]) -> None:
        self._source = newest_first
        self.read: list[Turn] = []
        self._starts: list[int] = []
        """Where in `read` each user turn is: a window of k questions holds read[:starts[k-1]+1]."""
        self._exhausted = False

    async def reach(self, questions: int) -> int:
        """Read until `questions` questions are known (or the turns run out); how many are."""
        while len(self._starts) < questions and not self._exhausted:
            turn = await anext(self._source, None)
            if turn is None:
                self._exhausted = True
                break
            self.read.append(turn)
            if turn.role == "user":
                self._starts.append(len(self.read) - 1)
        return len(self._starts)

    def window(self, questions: int) -> list[Turn]:
        """The turns of a window of the newest `questions` questions, oldest first."""
        return self.read[: self._starts[questions - 1] + 1][::-1]


async def _widest(
    turns: _Read, measure: Callable[[int], Awaitable[_Fit]], budget: int, fits: _Fit
) -> _Fit:
    """The most questions that fit, from `fits`: doubled while they fit, then between."""
    fails = 0
    while not fails:
        tried = min(fits.questions * 2, await turns.reach(fits.questions * 2))
        if tried == fits.questions:
            return fits  # every question fits
        attempt = await measure(tried)
        if attempt.tokens <= budget:
            fits = attempt
        else:
            fails = tried
    low, high = fits.questions + 1, fails - 1
    while low <= high:
        attempt = await measure((low + high) // 2)
        if attempt.tokens <= budget:
            fits, low = attempt, attempt.questions + 1
        else:
            high = attempt.questions - 1
    return fits
