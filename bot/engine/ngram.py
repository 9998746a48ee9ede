"""Guessing a chat's next tokens from its own tokens (prompt lookup): the tokens that followed
its last few tokens where those appeared before, in the prompt or in the reply. A reply that
repeats what the conversation holds (a corrected paragraph, an answer about a document, code
with a small change, names and numbers from earlier turns) is guessed right for long runs."""

from __future__ import annotations

from collections.abc import Sequence

LONGEST = 4
"""The longest run of a chat's last tokens looked up."""
RESYNC = 2 * LONGEST + 2
"""The kind of a guess made by finding the place being copied again after an edit (see
`NgramIndex.guess`); kinds up to 2 * LONGEST + 1 are `bot.engine.draftplan`'s."""
RESYNC_WINDOW = 8
"""How far past the place a copy left off an edit may end (in tokens of what is copied)."""

Guess = tuple[int, int]
"""A guessed token and its kind: for an n-gram guess, the length of the run it followed."""


class NgramIndex:
    """A chat's tokens, and where each of their short runs was last followed by a token."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens: list[int] = []
        self._after: list[dict[object, int]] = [{} for _ in range(LONGEST + 1)]
        """_after[n][run of n tokens] = the index of the token that last followed that run
        (a single token is its own key, longer runs are tuples)."""
        self._copying: int | None = None
        """Where the chat is copying from: the index of the token it would write next if it
        went on copying (set by a guess that followed a run of two tokens or more)."""
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        history, after = self.tokens, self._after
        for token in tokens:
            if self._copying is not None and history[self._copying] == token:
                self._copying += 1  # (an edit leaves it where the copy left off)
            end = len(history)
            if end:
                after[1][history[-1]] = end
                for n in range(2, min(LONGEST, end) + 1):
                    after[n][tuple(history[end - n :])] = end
            history.append(token)

    def guess(self, most: int) -> list[Guess]:
        """Up to `most` tokens that may come next: what followed the longest run of the last
        tokens that was seen before (its last time), and on from the end of that guess.

        Where only the last token (or nothing) was seen before, a chat that was copying and
        made an edit (a word corrected) is likelier to go on copying just past it: if its last
        token is among the next RESYNC_WINDOW tokens after where the copy left off, what
        follows it there is guessed (kind RESYNC)."""
        history = self.tokens
        guesses: list[Guess] = []
        tail = history[-LONGEST:]
        while len(guesses) < most and tail:
            for n in range(min(LONGEST, len(tail)), 0, -1):
                start = self._after[n].get(tail[-1] if n == 1 else tuple(tail[-n:]))
                if start is not None:
                    break
            else:
                n, start = 0, None
            if not guesses and n <= 1 and (resync := self._resync()) is not None:
                n, start = RESYNC, resync
            if start is None:
                break
            if (not guesses and 2 <= n <= LONGEST) or n == RESYNC:
                self._copying = start
            taken = history[start : start + most - len(guesses)]
            guesses += [(token, n) for token in taken]
            tail = (tail + taken)[-LONGEST:]
        return guesses

    def _resync(self) -> int | None:
        """Where a copy goes on after an edit ending with the last token, if it is near."""
        history, copying = self.tokens, self._copying
        if copying is None or not history:
            return None
        window = history[copying : min(copying + RESYNC_WINDOW, len(history) - 1)]
        try:
            return copying + window.index(history[-1]) + 1
        except ValueError:
            return None
