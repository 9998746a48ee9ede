"""Progress of long model-file jobs: a tqdm bar drawn only on a terminal, and sizes and
durations for humans."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm


def format_bytes(n: float) -> str:
    """`n` bytes as a short human-readable size: 512 B, 12.3 MB, 12.6 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """A duration as a clock shows it: 0:07, 12:34, 1:02:03."""
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def byte_progress(total: int, *, label: str, enabled: bool | None = None,
                  stream: TextIO | None = None) -> Any:
    """A tqdm bar counting bytes (`update(n)`; use it as a context manager).

    `enabled=None` draws only when the stream (default stderr) is a terminal, so logs and pipes
    stay clean.
    """
    return tqdm(
        total=max(total, 0), desc=label, unit="B", unit_scale=True, unit_divisor=1000,
        file=stream if stream is not None else sys.stderr,
        disable=None if enabled is None else not enabled, mininterval=0.1, leave=True,
    )
