"""The terminal face of an auto quantization (`alpaca-bot quantize SRC --auto`): the plan and
the estimate first, a progress bar per step on a terminal (one line per step in a log or a
pipe), then the table."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from bot.models.auto_plan import AutoPlan
from bot.models.auto_quantize import AutoProgress, run_auto_quantize
from bot.models.auto_report import AutoQuantizeReport
from bot.models.auto_timing import MachineSpeed
from bot.models.progress import format_bytes, format_duration


def describe_plan(plan: AutoPlan) -> str:
    o = plan.options
    fitting = ", ".join(t.qtype.label for t in plan.fitting) or "none"
    lines = [
        f"auto quantization of {plan.source.path.name} ({plan.source.file_type_name}, "
        f"{format_bytes(plan.source.size_bytes)}): {fitting}",
        f"  memory budget {format_bytes(o.budget_bytes)}; KV cache {plan.kv.slots} × "
        f"{plan.kv.n_ctx} tokens ({o.kv_type}) = {format_bytes(plan.kv.bytes)}",
        f"  perplexity on {o.text_name}, -c {o.n_ctx}"
        + (f", at most {o.chunks} chunks" if o.chunks else ""),
    ]
    for t in plan.types:
        if not t.fits:
            lines.append(f"  {t.qtype.label}: skipped, needs ~{format_bytes(t.ram_bytes)}")
    return "\n".join(lines)


_BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class StepBars:
    """One tqdm bar per step, replaced when the next step starts."""

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._bar: tqdm[None] | None = None
        self._key: tuple[int, str] | None = None

    def __call__(self, p: AutoProgress) -> None:
        if p.stage == "probe":
            return
        key = (p.step, "measure" if p.stage in ("perplexity", "speed") else p.stage)
        label = f"[{p.step}/{p.steps}] {p.qtype} {key[1]}"
        if key != self._key:
            self.close()
            self._key = key
            if self._enabled:
                self._bar = tqdm(total=p.total or 1, desc=label, file=self._stream, leave=True,
                                 dynamic_ncols=True, bar_format=_BAR_FORMAT)
            else:
                print(label, file=self._stream, flush=True)
        if self._bar is not None:
            if p.stage != "speed":  # the speed test closes the measure step: keep its chunks
                if self._bar.total != p.total and p.total:
                    self._bar.total = p.total
                self._bar.n = p.done
            left = f", ~{format_duration(p.remaining)} left in all" if p.remaining else ""
            self._bar.set_postfix_str(f"{p.detail}{left}", refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def run_in_terminal(plan: AutoPlan, *, out: TextIO | None = None,
                    err: TextIO | None = None) -> AutoQuantizeReport:
    """Run the plan, printing the estimate and bars to `err`, the table to `out`."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    print(describe_plan(plan), file=err, flush=True)

    def on_estimate(seconds: float, speed: MachineSpeed) -> None:
        print(f"estimated total time: ~{format_duration(seconds)} (measured here: "
              f"{speed.prompt_tokens_per_second:.0f} prompt tokens/s on the source, "
              f"{format_bytes(speed.source_bytes)} to quantize per type)", file=err, flush=True)

    bars = StepBars(err, enabled=_is_tty(err))
    try:
        report = run_auto_quantize(plan, on_progress=bars, on_estimate=on_estimate)
    finally:
        bars.close()
    print(report.table(), file=out)
    print(report.summary(), file=out)
    chosen = report.chosen
    if chosen is not None and chosen.path is not None:
        print(f"kept {chosen.path}", file=out)
    for c in report.candidates:
        if c.path is not None and not c.chosen:
            print(f"kept {c.path} (--keep-all)", file=out)
    print(f"table: {report.json_path}", file=out)
    print(f"chart: {report.chart_path}" if report.chart_path else report.chart_note, file=out)
    print(f"took {format_duration(report.seconds)} (estimated "
          f"{format_duration(report.estimated_seconds)})", file=out)
    return report


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
