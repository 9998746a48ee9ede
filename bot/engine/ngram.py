"""Guessing a chat's next tokens from its own tokens (prompt lookup): the tokens that followed
its last few tokens where those appeared before, in the prompt or in the reply. A reply that
repeats what the conversation holds (a corrected paragraph, an answer about a document, code
with a small change, names and numbers from earlier turns) is guessed right for long runs."""

from __future__ import annotations

from collections.abc import Sequence

LONGEST = 4
"""The longest run of a chat's last tokens looked up."""

Guess = tuple[int, int]
"""A guessed token and its kind: for an n-gram guess, the length of the run it followed."""


class NgramIndex:
    """A chat's tokens, and where each of their short runs was last followed by a token."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens: list[int] = []
        self._after: list[dict[object, int]] = [{} for _ in range(LONGEST + 1)]
        """_after[n][run of n tokens] = the index of the token that last followed that run
        (a single token is its own key, longer runs are tuples)."""
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        history, after = self.tokens, self._after
        for token in tokens:
            end = len(history)
            if end:
                after[1][history[-1]] = end
                for n in range(2, min(LONGEST, end) + 1):
                    after[n][tuple(history[end - n :])] = end
            history.append(token)

    def guess(self, most: int) -> list[Guess]:
        """Up to `most` tokens that may come next: what followed the longest run of the last
        tokens that was seen before (its last time), and on from the end of that guess."""
        history = self.tokens
        guesses: list[Guess] = []
        tail = history[-LONGEST:]
        while len(guesses) < most and tail:
            for n in range(min(LONGEST, len(tail)), 0, -1):
                start = self._after[n].get(tail[-1] if n == 1 else tuple(tail[-n:]))
                if start is not None:
                    break
            else:
                break
            taken = history[start : start + most - len(guesses)]
            guesses += [(token, n) for token in taken]
            tail = (tail + taken)[-LONGEST:]
        return guesses
