"""The chart of an auto run: file size against perplexity (± its error), each type labelled
with its generation speed, the chosen one marked. A PNG drawn with matplotlib, an optional
dependency (`pip install 'alpaca-bot[chart]'`): without it the chart is skipped with a note.
"""

from __future__ import annotations

import os
import secrets
from contextlib import suppress
from pathlib import Path

from bot.i18n import N_
from bot.models.auto_report import AutoQuantizeReport

MISSING_NOTE = N_("chart skipped: matplotlib is not installed "
                  "(pip install 'alpaca-bot[chart]' adds it)")
"""In English (the CLI, the JSON); a chat shows it translated."""


class ChartUnavailable(Exception):
    """The plotting library is not installed."""


def draw_chart(report: AutoQuantizeReport, path: Path) -> Path:
    """Write the chart to `path` (atomically) and return it; ChartUnavailable without
    matplotlib. Types that were not measured are left out."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display, no GUI toolkit
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ChartUnavailable(MISSING_NOTE) from exc

    measured = [c for c in report.candidates if c.measured]
    figure = Figure(figsize=(8, 5), dpi=110, layout="tight")
    axes = figure.add_subplot()
    for c in measured:
        assert c.ppl is not None and c.tokens_per_second is not None
        size = c.size_bytes / 1e6
        error = c.ppl_error if c.ppl_error is not None and c.ppl_error == c.ppl_error else 0.0
        color = "tab:green" if c.chosen else "tab:blue"
        axes.errorbar([size], [c.ppl], yerr=[error], fmt="o", color=color, capsize=4,
                      markersize=8 if c.chosen else 6)
        label = f"{c.qtype}\n{c.tokens_per_second:.1f} tok/s" + ("\n(chosen)" if c.chosen else "")
        axes.annotate(label, (size, c.ppl), textcoords="offset points", xytext=(8, 6),
                      fontsize=8, color=color)
    axes.set_xlabel("file size (MB)")
    axes.set_ylabel(f"perplexity (n_ctx {report.n_ctx}), lower is better")
    axes.set_title(f"{report.source.name}: quantization types on this machine "
                   f"({report.threads} threads)", fontsize=10)
    axes.grid(True, alpha=0.3)
    if measured:
        axes.margins(x=0.2, y=0.2)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()
    return path
