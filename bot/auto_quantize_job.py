"""`/quantize auto [TYPES...] [FILE]`: the bot's side of an auto quantization.

What to run (the source, the types, the budget and KV cache from the settings), the run itself
on a worker thread with its progress brought back to the event loop, and the texts the chat
sees: one progress line (step k/N, type, tensor or chunk, elapsed, estimate) and, at the end,
the table and a caption for the chart. `bot.quantize_jobs` records and schedules it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.errors import QuantizeError, UserError
from bot.i18n import _
from bot.models.auto_quantize import (
    DEFAULT_TYPES,
    AutoPlan,
    AutoProgress,
    AutoQuantizeOptions,
    plan_auto_quantize,
    run_auto_quantize,
)
from bot.models.auto_report import AutoQuantizeReport
from bot.models.auto_timing import MachineSpeed
from bot.models.library import find_model
from bot.models.memory_budget import default_budget
from bot.models.perplexity import load_sample_text
from bot.models.progress import format_bytes
from bot.models.quant_types import QuantType, parse_quant_type
from bot.settings import Settings

MAX_CAPTION = 1024
"""Telegram's limit for a photo's caption."""
PERPLEXITY_CTX = 512
PERPLEXITY_CHUNKS: int | None = None
"""The perplexity run: chunks of 512 tokens over the whole shipped sample, as `perplexity`."""


def plan_auto_job(settings: Settings, argument: str) -> AutoPlan:
    """Parse what follows `/quantize auto`: quantization types, then optionally a file of the
    models directory (else `quantize_source`). Checks what can be checked before it runs."""
    types: list[QuantType] = []
    rest: list[str] = []
    for word in argument.split():
        if not rest:
            try:
                types.append(parse_quant_type(word))
                continue
            except QuantizeError:
                pass
        rest.append(word)
    models = settings.models_directory
    if rest:
        source = find_model(models, " ".join(rest)).path
    elif settings.quantize_source is not None:
        source = settings.quantize_source
    else:
        raise UserError(_(
            "No source to quantize: set `quantize_source` (an f16 GGUF) in the config, or "
            "name a file of the models directory: /quantize auto FILE"
        ))
    models.mkdir(parents=True, exist_ok=True)
    options = AutoQuantizeOptions(
        types=tuple(types) or tuple(parse_quant_type(t) for t in DEFAULT_TYPES),
        budget_bytes=default_budget(), text=load_sample_text(), n_ctx=PERPLEXITY_CTX,
        chunks=PERPLEXITY_CHUNKS, threads=settings.threads,
        slots=settings.slots if settings.engine == "pool" else 1, max_ctx=settings.max_ctx,
        kv_type=settings.kv_type, replace=True, output_dir=models,
    )
    return plan_auto_quantize(source, options)


def describe(plan: AutoPlan) -> str:
    """`tiny-f16.gguf → auto (q4_0, q8_0)`: what a job is, for "already running"."""
    return f"{plan.source.path.name} → auto ({', '.join(t.qtype.label for t in plan.types)})"


def queued_text(job_id: int, plan: AutoPlan) -> str:
    skipped = [t.qtype.label for t in plan.types if not t.fits]
    fitting = ", ".join(t.qtype.label for t in plan.fitting)
    name = plan.source.path.name
    lines = [
        _("Auto-quantization #{id} queued: {file} → {types}.", id=job_id, file=name,
          types=fitting) if fitting
        else _("Auto-quantization #{id} queued: {file} → nothing.", id=job_id, file=name),
        _("Memory budget {budget} (model + KV cache of {slots} × {n_ctx} tokens, {kv}).",
          budget=format_bytes(plan.options.budget_bytes), slots=plan.kv.slots,
          n_ctx=plan.kv.n_ctx, kv=format_bytes(plan.kv.bytes)),
    ]
    if skipped:
        lines.append(_("Too large for it: {types}.", types=", ".join(skipped)))
    lines.append(_("Measuring this machine's speed first… /quantize cancel stops it."))
    return "\n".join(lines)


def progress_text(plan: AutoPlan, p: AutoProgress, estimate: float | None) -> str:
    """One line a progress edit shows."""
    from bot.quantize_jobs import format_duration

    name = plan.source.path.name
    if p.stage == "probe":
        return _("Auto-quantizing {file}: {detail}…", file=name, detail=p.detail)
    stage = (_("{qtype} quantize", qtype=p.qtype) if p.stage == "quantize"
             else _("{qtype} measure", qtype=p.qtype))
    elapsed = format_duration(p.elapsed)
    if p.remaining is not None and estimate:
        timing = _("{elapsed} elapsed, ~{left} left (estimated {total} in all)", elapsed=elapsed,
                   left=format_duration(p.remaining), total=format_duration(estimate))
    elif p.remaining is not None:
        timing = _("{elapsed} elapsed, ~{left} left", elapsed=elapsed,
                   left=format_duration(p.remaining))
    elif estimate:
        timing = _("{elapsed} elapsed (estimated {total} in all)", elapsed=elapsed,
                   total=format_duration(estimate))
    else:
        timing = _("{elapsed} elapsed", elapsed=elapsed)
    return _("Auto-quantizing {file}: step {step}/{steps} — {stage}, {detail} · {timing}",
             file=name, step=p.step, steps=p.steps, stage=stage, detail=p.detail, timing=timing)


def table_text(report: AutoQuantizeReport) -> str:
    """The final message: the table in a code block, the choice, the notes (Markdown, as the
    reply streamer renders it)."""
    from bot.quantize_jobs import format_duration

    lines = [_("✅ Auto-quantization of {file} done in {duration}:", file=report.source.name,
               duration=format_duration(report.seconds)), "```", report.table(), "```",
             report.summary()]
    chosen = report.chosen
    if chosen is not None and chosen.path is not None:
        lines.append(_("File: {path}", path=chosen.path))
    if report.chart_note:
        lines.append(_("({note})", note=_(report.chart_note)))
    return "\n".join(lines)


def caption_text(report: AutoQuantizeReport) -> str:
    """The chart's caption: the choice (within Telegram's 1024 characters)."""
    chosen = report.chosen
    text = _("{file}: file size against perplexity, tokens/s as labels.",
             file=report.source.name)
    if chosen is not None:
        text += f"\n{report.summary()}"
    return text[:MAX_CAPTION]


@dataclass
class AutoJobRun:
    """One run on a worker thread: progress and the estimate arrive on the event loop."""

    plan: AutoPlan
    on_progress: Callable[[str], object]
    cancel: threading.Event
    estimate: float | None = None
    last: AutoProgress | None = None

    async def run(self) -> AutoQuantizeReport:
        loop = asyncio.get_running_loop()

        def progress(p: AutoProgress) -> None:
            loop.call_soon_threadsafe(self._progress, p)

        def estimated(seconds: float, speed: MachineSpeed) -> None:
            self.estimate = seconds

        # In this task's context: the worker's texts are in the chat's language.
        context = contextvars.copy_context()
        job = loop.run_in_executor(None, context.run, lambda: run_auto_quantize(
            self.plan, on_progress=progress, on_estimate=estimated, cancel=self.cancel))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            self.cancel.set()  # the bot is stopping: end the step, remove the work directory
            await asyncio.gather(job, return_exceptions=True)
            raise

    def _progress(self, p: AutoProgress) -> None:
        self.last = p
        if p.stage != "probe":  # the queued message already says it measures the machine
            self.on_progress(progress_text(self.plan, p, self.estimate))

    def at_step(self) -> tuple[int, int] | None:
        """The step it is at and the number of steps, None while it measures the machine."""
        p = self.last
        return None if p is None or p.stage == "probe" else (p.step, p.steps)


def remove_leftovers(target: Path) -> None:
    """After a crash: the work directory a job recorded as its target."""
    from bot.models.auto_quantize import remove_work_dirs

    remove_work_dirs(target.parent, target)
