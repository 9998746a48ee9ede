"""One reply as it is generated, the same in both local engines: each sampled token's bytes
become text sent to the request, until generation ends, a stop string appears or the length
limit is reached; then the text held back goes out and the reply's `Finished` is made."""

from __future__ import annotations

import random

from bot.core.textstream import ReplyText
from bot.engine.base import Finished, StopReason, TextDelta
from bot.engine.intake import Intake
from bot.engine.requests import Ticket, finished_now


class ReplyStream:
    """The text, token count, length limit and seed of one reply (worker thread only)."""

    def __init__(
        self, intake: Intake, ticket: Ticket, *, n_prompt: int, n_evaluated: int, room: int
    ) -> None:
        """`n_prompt` tokens in the prompt, of which `n_evaluated` are evaluated (the rest was
        cached); `room` tokens are left in the context after the prompt."""
        self._intake = intake
        self._ticket = ticket
        request = ticket.request
        self._n_predict = request.sampling.n_predict
        self._text = ReplyText(request.stop)
        self.n_prompt = n_prompt
        self.n_evaluated = n_evaluated
        self.limit = min(self._n_predict, room)
        self.generated = 0
        seed = request.sampling.seed
        self.seed = seed if seed >= 0 else random.getrandbits(31)
        """What the reply samples with: the request's seed, or a random one if it gave none."""

    def feed(self, piece: bytes | None) -> StopReason | None:
        """A sampled token's bytes (None: it ends generation); why the reply stops, if it does."""
        if piece is None:
            return "eos"
        self.generated += 1
        delta = self._text.feed(piece)
        if delta:
            self._intake.emit(self._ticket, TextDelta(delta))
        if self._text.stopped_by is not None:
            return "stop"
        if self.generated >= self.limit:
            return "length" if self.limit == self._n_predict else "context"
        return None

    def close(self, reason: StopReason) -> Finished:
        """Send the text held back (a partial character, a possible stop string's start) and
        return the reply's `Finished`, for the request's end."""
        tail = self._text.finish()
        if tail:
            self._intake.emit(self._ticket, TextDelta(tail))
        return finished_now(
            self._ticket, reason, text=self._text.text, n_prompt_tokens=self.n_prompt,
            n_evaluated=self.n_evaluated, n_generated=self.generated,
        )
