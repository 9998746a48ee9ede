"""What a chat sees of a quantization job: its progress line, how it ended, and for
`/quantize auto` what was queued, the table and the chart's caption (Markdown, as the reply
streamer renders it). Every text in the language of the chat that asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.i18n import _
from bot.models.auto_plan import AutoPlan
from bot.models.auto_quantize import AutoProgress
from bot.models.auto_report import AutoQuantizeReport
from bot.models.progress import format_bytes, format_duration
from bot.models.quant_types import QuantType
from bot.models.quantize import QuantizeResult
from bot.models.quantizer_process import QuantizeProgress


def progress_text(source: Path, qtype: QuantType, progress: QuantizeProgress) -> str:
    """One line a `/quantize` progress edit shows."""
    values = {
        "file": source.name, "qtype": qtype.label,
        "index": progress.tensor_index, "count": progress.tensor_count,
        "percent": f"{progress.fraction:.0%}", "elapsed": format_duration(progress.elapsed),
    }
    if progress.eta is None:
        return _("Quantizing {file} → {qtype}: tensor {index}/{count} ({percent}), "
                 "{elapsed} elapsed", **values)
    return _("Quantizing {file} → {qtype}: tensor {index}/{count} ({percent}), "
             "{elapsed} elapsed, ~{left} left", left=format_duration(progress.eta), **values)


def describe(plan: AutoPlan) -> str:
    """`tiny-f16.gguf → auto (q4_0, q8_0)`: what an auto job is, for "already running"."""
    return f"{plan.source.path.name} → auto ({', '.join(t.qtype.label for t in plan.types)})"


def queued_text(job_id: int, plan: AutoPlan) -> str:
    """The first text of an auto job's progress message: what it will make, within what."""
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


def auto_progress_text(plan: AutoPlan, p: AutoProgress, estimate: float | None) -> str:
    """One line an auto job's progress edit shows."""
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
    """An auto job's final message: the table in a code block, the choice, the notes."""
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
    """The chart's caption: what it shows and the choice."""
    chosen = report.chosen
    text = _("{file}: file size against perplexity, tokens/s as labels.",
             file=report.source.name)
    if chosen is not None:
        text += f"\n{report.summary()}"
    return text


@dataclass(frozen=True)
class QuantizeEndings:
    """How a `/quantize` job of `source` into `qtype` can end, as its chat reads it."""

    source: Path
    qtype: QuantType

    def cancelled(self) -> str:
        return _("⏹ Quantizing {file} to {qtype} cancelled; nothing was written.",
                 file=self.source.name, qtype=self.qtype.label)

    def failed(self, error: Exception) -> str:
        return _("❌ Quantizing {file} to {qtype} failed: {error}",
                 file=self.source.name, qtype=self.qtype.label, error=error)

    def crashed(self) -> str:
        return _("❌ Quantizing {file} failed unexpectedly; see the logs.", file=self.source.name)

    def done(self, result: QuantizeResult, *, type_before: str, remote: bool) -> str:
        """`remote`: the replies come from model servers, which /model cannot switch."""
        if remote:
            next_step = _("The replies come from the model servers, so /model cannot load it: "
                          "serve it with llama-server -m {path} to use it.", path=result.output)
        else:
            next_step = _("Switch to it with /model {name}", name=result.output.name)
        return _(
            "✅ Quantized {file} ({size_before}, {type_before}) → {output} ({size_after}, "
            "{qtype}) in {duration}.\nFile: {path}\n{next_step}",
            file=self.source.name, size_before=format_bytes(result.size_before),
            type_before=type_before, output=result.output.name,
            size_after=format_bytes(result.size_after), qtype=self.qtype.label,
            duration=format_duration(result.seconds), path=result.output, next_step=next_step,
        )


@dataclass(frozen=True)
class AutoEndings:
    """How a `/quantize auto` job of `source` can end (done: `table_text`)."""

    source: Path

    def cancelled(self) -> str:
        return _("⏹ Auto-quantization of {file} cancelled; its partial files are removed.",
                 file=self.source.name)

    def failed(self, error: Exception) -> str:
        return _("❌ Auto-quantization of {file} failed: {error}", file=self.source.name,
                 error=error)

    def crashed(self) -> str:
        return _("❌ Auto-quantization of {file} failed unexpectedly; see the logs.",
                 file=self.source.name)


def interrupted_text(job_id: int, source: Path, qtype: str) -> str:
    """What the chat that asked hears when a restart cut its job off."""
    return _(
        "⚠️ Quantization #{id} ({file} → {qtype}) was interrupted by a restart of the "
        "bot. Nothing was written; run /quantize again.",
        id=job_id, file=source.name, qtype=qtype,
    )
