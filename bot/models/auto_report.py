"""The outcome of `quantize --auto`: one row per type, the rule that chooses among them, and the
table and JSON it is shown as. Pure: no files are read or written here.

The rule: the lowest perplexity among the types that fit the memory budget; types whose
perplexity is within the best one's error of it count as tied, and a tie goes to the fastest
(speeds within 5% count as equal, the noise of a shared machine), then the smallest file.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.i18n import _
from bot.models.progress import format_bytes

SPEED_TOLERANCE = 0.05
"""Generation speeds closer than this share count as the same."""


@dataclass(frozen=True)
class Reason:
    """Why a type was not measured: a message marked with `N_` and its values. The JSON has it
    in English (`english`), the table in the reader's language (`shown`)."""

    message: str
    values: Mapping[str, object] = field(default_factory=dict)

    def english(self) -> str:
        return self.message.format(**self.values)

    def shown(self) -> str:
        return _(self.message, **self.values)


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One quantization type in an auto run: measured, or why it was not."""

    qtype: str
    size_bytes: int
    """The file's size; before quantizing (a skipped type) the expected size."""
    ram_bytes: int
    """The file plus the KV cache of `slots × max_ctx`."""
    estimated: bool = False
    """True when the sizes are estimates (the type was skipped before it was quantized)."""
    ppl: float | None = None
    ppl_error: float | None = None
    tokens_per_second: float | None = None
    skipped: str | None = None
    """Why the type was not measured (too large for the budget, llama.cpp refused it), in
    English."""
    reason: Reason | None = None
    """The same, to be shown translated (`skipped` is shown as it is without it)."""
    chosen: bool = False
    path: Path | None = None
    """The file, if it is kept."""
    quantize_seconds: float | None = None
    measure_seconds: float | None = None
    """Loading the file, perplexity and the speed test."""
    speed_seconds: float | None = None
    """The speed test alone."""

    @property
    def measured(self) -> bool:
        return (self.skipped is None and self.ppl is not None
                and self.tokens_per_second is not None)


def choose(candidates: Sequence[Candidate]) -> Candidate | None:
    """The type the rule picks (None when none was measured)."""
    measured = [c for c in candidates if c.measured]
    if not measured:
        return None
    best = min(measured, key=lambda c: _number(c.ppl))
    margin = best.ppl_error if best.ppl_error is not None and math.isfinite(best.ppl_error) else 0
    tied = [c for c in measured if _number(c.ppl) <= _number(best.ppl) + margin]
    fastest = max(_number(c.tokens_per_second) for c in tied)
    quick = [c for c in tied if _number(c.tokens_per_second) >= fastest * (1 - SPEED_TOLERANCE)]
    return min(quick, key=lambda c: (c.size_bytes, _number(c.ppl)))


def mark_choice(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates with `chosen` set on the one `choose` picks."""
    winner = choose(candidates)
    return [replace(c, chosen=c is winner) for c in candidates]


def _number(value: float | None) -> float:
    return math.inf if value is None or math.isnan(value) else value


@dataclass(frozen=True, kw_only=True)
class AutoQuantizeReport:
    """Everything an auto run found, and where it put it."""

    source: Path
    source_bytes: int
    source_type: str
    budget_bytes: int
    kv_bytes: int
    kv_slots: int
    kv_ctx: int
    text_name: str
    n_ctx: int
    chunks: int | None
    threads: int
    candidates: tuple[Candidate, ...]
    seconds: float
    estimated_seconds: float
    json_path: Path | None = None
    chart_path: Path | None = None
    chart_note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.chosen), None)

    def table(self) -> str:
        """A fixed-width table: type, file size, RAM needed, PPL ± error, tokens/s, chosen."""
        header = (_("type"), _("file size"), _("RAM needed"), _("PPL ± error"), "tokens/s",
                  _("chosen"))
        rows = [header]
        for c in self.candidates:
            approx = "~" if c.estimated else ""
            ppl = "" if c.ppl is None else f"{c.ppl:.3f} ± {_error(c.ppl_error)}"
            speed = "" if c.tokens_per_second is None else f"{c.tokens_per_second:.1f}"
            skipped = c.reason.shown() if c.reason is not None else c.skipped
            mark = "✓" if c.chosen else (skipped or "")
            rows.append((c.qtype, approx + format_bytes(c.size_bytes),
                         approx + format_bytes(c.ram_bytes), ppl, speed, mark))
        widths = [max(_width(row[i]) for row in rows) for i in range(len(header) - 1)]
        right = (False, True, True, True, True)
        lines = []
        for row in rows:
            cells = [_pad(cell, w, right=r)
                     for cell, w, r in zip(row[:-1], widths, right, strict=True)]
            lines.append("  ".join([*cells, row[-1]]).rstrip())
        return "\n".join(lines)

    def summary(self) -> str:
        """One or two lines: what was chosen and why, or why nothing was."""
        chosen = self.chosen
        budget = format_bytes(self.budget_bytes)
        if chosen is None:
            return _("No type was chosen: none of them fitted the memory budget of {budget} or "
                     "could be measured.", budget=budget)
        return _("Chosen: {qtype} ({size}, PPL {ppl}, {speed} tokens/s; needs {ram} of the "
                 "{budget} budget with the KV cache of {slots} × {n_ctx} tokens).",
                 qtype=chosen.qtype, size=format_bytes(chosen.size_bytes), ppl=f"{chosen.ppl:.3f}",
                 speed=_speed(chosen), ram=format_bytes(chosen.ram_bytes), budget=budget,
                 slots=self.kv_slots, n_ctx=self.kv_ctx)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "source_bytes": self.source_bytes,
            "source_type": self.source_type,
            "budget_bytes": self.budget_bytes,
            "kv_cache": {"bytes": self.kv_bytes, "slots": self.kv_slots, "n_ctx": self.kv_ctx},
            "text": self.text_name,
            "n_ctx": self.n_ctx,
            "chunks": self.chunks,
            "threads": self.threads,
            "seconds": round(self.seconds, 3),
            "estimated_seconds": round(self.estimated_seconds, 3),
            "chosen": self.chosen.qtype if self.chosen else None,
            "chart": str(self.chart_path) if self.chart_path else None,
            "types": [_candidate_json(c) for c in self.candidates],
            **self.extra,
        }


def _candidate_json(c: Candidate) -> dict[str, Any]:
    def finite(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else round(value, 6)

    return {
        "type": c.qtype,
        "file_bytes": c.size_bytes,
        "ram_bytes": c.ram_bytes,
        "estimated": c.estimated,
        "ppl": finite(c.ppl),
        "ppl_error": finite(c.ppl_error),
        "tokens_per_second": finite(c.tokens_per_second),
        "skipped": c.skipped,
        "chosen": c.chosen,
        "file": str(c.path) if c.path else None,
        "quantize_seconds": finite(c.quantize_seconds),
        "measure_seconds": finite(c.measure_seconds),
        "speed_seconds": finite(c.speed_seconds),
    }


def _width(text: str) -> int:
    """The columns `text` takes in a monospaced font: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int, *, right: bool) -> str:
    """`text` padded with spaces to `width` columns (as rjust/ljust, counting wide characters
    as two)."""
    fill = " " * max(width - _width(text), 0)
    return fill + text if right else text + fill


def _error(value: float | None) -> str:
    return "?" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _speed(c: Candidate) -> str:
    return "?" if c.tokens_per_second is None else f"{c.tokens_per_second:.1f}"
