"""Turning a stream of token bytes into reply text: UTF-8-safe, cut at stop strings.

A Chinese character or an emoji often spans several tokens; bytes are held until they form
whole characters. Text that could be the start of a stop string is held back too, so a stop
marker never flashes on screen before it is recognised.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class ReplyText:
    """Accumulates a reply from token pieces (bytes) and detects stop strings."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._text = ""
        self._emitted = 0
        self.stopped_by: str | None = None

    @property
    def text(self) -> str:
        """The reply so far, without any stop string or what follows it."""
        return self._text

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the newly complete text that is safe to show."""
        if self.stopped_by is not None:
            return ""
        self._text += self._decoder.decode(piece)
        return self._release()

    def finish(self) -> str:
        """End of generation: release held-back text; drop a character left unfinished.

        A reply cut off by `-n` or the context often ends inside a multi-byte character (a CJK
        character takes up to three tokens here); showing U+FFFD for it would be the broken
        character this class exists to prevent. Invalid bytes inside the text are still shown
        as U+FFFD: those the model really produced.
        """
        if self.stopped_by is None:
            self._decoder.reset()
            self._check_stops()
        delta = self._text[self._emitted :]
        self._emitted = len(self._text)
        return delta

    def _release(self) -> str:
        self._check_stops()
        if self.stopped_by is not None:
            safe = len(self._text)
        else:
            safe = len(self._text) - self._held_back()
        delta = self._text[self._emitted : safe]
        self._emitted = max(self._emitted, safe)
        return delta

    def _check_stops(self) -> None:
        # Only the tail that may contain a new occurrence needs scanning.
        longest = max((len(s) for s in self._stop), default=0)
        start = max(0, self._emitted - longest)
        cut = -1
        for stop in self._stop:
            found = self._text.find(stop, start)
            if found != -1 and (cut == -1 or found < cut):
                cut, self.stopped_by = found, stop
        if cut != -1:
            self._text = self._text[:cut]

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        held = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self._text)), held, -1):
                if self._text.endswith(stop[:size]):
                    held = size
                    break
        return held
