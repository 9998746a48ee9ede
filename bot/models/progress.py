"""A one-line terminal progress bar for long model-file jobs, drawn only on a terminal."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


def format_bytes(n: float) -> str:
    """`n` bytes as a short human-readable size: 512 B, 12.3 MB, 12.6 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class ProgressBar:
    """Counts bytes done out of a total and redraws `label  42% [#####.....] 1.2/2.9 GB`.

    `enabled=None` draws only when the stream is a terminal, so logs and pipes stay clean.
    """

    def __init__(self, total: int, *, label: str, enabled: bool | None = None,
                 stream: TextIO | None = None, width: int = 30, min_interval: float = 0.1) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self._stream) if enabled is None else enabled
        self.total = max(total, 0)
        self.done = 0
        self._label = label
        self._width = width
        self._min_interval = min_interval
        self._last_draw = 0.0
        self._drawn = False
        self._line_len = 0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last_draw >= self._min_interval or self.done >= self.total):
            self._last_draw = now
            self._draw()

    def close(self) -> None:
        """Finish the line (only if something was drawn)."""
        if self.enabled and self._drawn:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _draw(self) -> None:
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * self._width)
        bar = "#" * filled + "." * (self._width - filled)
        line = (f"{self._label} {fraction:4.0%} [{bar}] "
                f"{format_bytes(self.done)} / {format_bytes(self.total)}")
        # Pad over a longer previous line instead of relying on terminal escape codes.
        self._stream.write("\r" + line.ljust(self._line_len))
        self._line_len = len(line)
        self._stream.flush()
        self._drawn = True


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False
