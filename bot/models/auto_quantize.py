"""`quantize --auto`: quantize a source to several types, measure each one here, keep the best.

The plan (`bot.models.auto_plan`) sized each type. For each type: skip it when its file plus
the KV cache of `slots × max_ctx` would not fit the memory budget; else quantize it (`quantize_model`: child process, disk checked, atomic), then
load it once to measure its perplexity on the text (llama.cpp's method) and its generation
speed (llama-bench's tg). The rule of `bot.models.auto_report` chooses; only the chosen file is
kept unless `keep_all`. The table is written as JSON next to the models, with a PNG chart when
matplotlib is installed.

Candidates are written into a hidden work directory next to the outputs and moved into place
at the end, so a cancel, a failure or a crash leaves nothing but that directory, which the run
(or, after a crash, the bot's next start) removes. Blocking: run it on a worker thread.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from bot.errors import ModelError, QuantizeCancelled, QuantizeError
from bot.i18n import N_, _
from bot.llama.cpu import physical_cores
from bot.models.auto_plan import AutoPlan, PlannedType
from bot.models.auto_report import AutoQuantizeReport, Candidate, Reason, mark_choice
from bot.models.auto_timing import (
    SPEED_SHARE,
    MachineSpeed,
    RunClock,
    StepEstimate,
    estimate_steps,
    measure_machine,
)
from bot.models.evaluator import Evaluator
from bot.models.generation_speed import measure_generation
from bot.models.perplexity import perplexity_on
from bot.models.progress import format_bytes
from bot.models.quant_chart import ChartUnavailable, draw_chart
from bot.models.quant_types import QuantType
from bot.models.quantize import QuantizeResult, quantize_model
from bot.models.quantizer_process import QuantizeProgress

log = logging.getLogger(__name__)

Stage = Literal["probe", "quantize", "perplexity", "speed"]

TOO_LARGE_EXPECTED = N_("skipped: needs ~{ram}, budget {budget}")
TOO_LARGE = N_("skipped: needs {ram}, budget {budget}")
FAILED = N_("failed: {error}")
"""Why a type was not measured: the table shows them translated, the JSON in English."""


@dataclass(frozen=True)
class AutoProgress:
    """Where an auto run is: step `step` of `steps` (0 while it measures the machine)."""

    step: int
    steps: int
    qtype: str | None
    stage: Stage
    done: int
    total: int
    detail: str
    elapsed: float
    remaining: float | None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


ProgressCallback = Callable[[AutoProgress], object]
EstimateCallback = Callable[[float, MachineSpeed], object]


@dataclass
class _Run:
    plan: AutoPlan
    on_progress: ProgressCallback | None
    cancel: threading.Event | None
    clock: RunClock = field(init=False)
    step: int = 0

    def report(self, stage: Stage, qtype: QuantType | None, done: int, total: int,
               detail: str) -> None:
        if self.on_progress is None:
            return
        fraction = done / total if total else 0.0
        if stage in ("perplexity", "speed"):  # the measure step: perplexity, then a short test
            fraction = fraction * (1 - SPEED_SHARE) if stage == "perplexity" else 1 - SPEED_SHARE
        remaining = self.clock.remaining(fraction) if stage != "probe" else None
        self.on_progress(AutoProgress(
            step=self.step, steps=self.plan.steps, qtype=qtype.label if qtype else None,
            stage=stage, done=done, total=total, detail=detail, elapsed=self.clock.elapsed,
            remaining=remaining,
        ))


def run_auto_quantize(
    plan: AutoPlan,
    *,
    on_progress: ProgressCallback | None = None,
    on_estimate: EstimateCallback | None = None,
    cancel: threading.Event | None = None,
    draw: bool = True,
) -> AutoQuantizeReport:
    """Run the plan: measure the machine, estimate, then quantize and measure each type.

    `on_estimate(seconds, speed)` is called once, before the first quantization. Setting
    `cancel` stops the step in progress and raises QuantizeCancelled; the work directory is
    removed on any way out. `draw=False` leaves the chart out.
    """
    run = _Run(plan, on_progress, cancel)
    options = plan.options
    source = plan.source
    started = time.monotonic()
    run.clock = RunClock([], started=started)
    run.report("probe", None, 0, 1,
               _("measuring this machine's speed on {file}", file=source.path.name))
    speed = measure_machine(
        source.path, options.text, n_ctx=options.n_ctx, parameters=source.parameter_count,
        source_bytes=source.size_bytes, threads=options.threads, cancel=cancel,
    )
    fitting = plan.fitting
    estimates = estimate_steps(
        speed, [t.qtype for t in fitting], expected_sizes=[t.expected_bytes for t in fitting],
        n_ctx=options.n_ctx, chunks=options.chunks,
    )
    planned = [s for e in estimates for s in (e.quantize, e.measure)]
    total_estimate = speed.seconds + sum(planned)
    if on_estimate is not None:
        on_estimate(total_estimate, speed)
    run.clock = RunClock(planned, started=started)
    plan.work_dir.mkdir()
    try:
        candidates = _run_types(run, estimates)
        candidates = mark_choice(candidates)
        candidates = _keep_files(plan, candidates)
    finally:
        shutil.rmtree(plan.work_dir, ignore_errors=True)
    report = _report(plan, speed, candidates, seconds=time.monotonic() - started,
                     estimated=total_estimate)
    if draw:
        report = _with_chart(report, plan.chart_path)
    report = replace(report, seconds=time.monotonic() - started)
    _write_json(plan.json_path, report)
    log.info("auto quantization of %s: %s in %.1f s", source.path.name,
             report.chosen.qtype if report.chosen else "nothing chosen", report.seconds)
    return report


def _report(
    plan: AutoPlan, speed: MachineSpeed, candidates: list[Candidate], *, seconds: float,
    estimated: float,
) -> AutoQuantizeReport:
    """The run's report: the plan's inputs, the machine's speed and every candidate measured."""
    options, source = plan.options, plan.source
    return AutoQuantizeReport(
        source=source.path, source_bytes=source.size_bytes, source_type=source.file_type_name,
        budget_bytes=options.budget_bytes, kv_bytes=plan.kv.bytes, kv_slots=plan.kv.slots,
        kv_ctx=plan.kv.n_ctx, text_name=options.text_name, n_ctx=options.n_ctx,
        chunks=options.chunks, threads=options.threads or physical_cores(),
        candidates=tuple(candidates), seconds=seconds,
        estimated_seconds=estimated, json_path=plan.json_path,
        extra={"machine": {
            "prompt_tokens_per_second_f16": round(speed.prompt_tokens_per_second, 2),
            "probe_seconds": round(speed.seconds, 3),
        }},
    )


def _with_chart(report: AutoQuantizeReport, path: Path) -> AutoQuantizeReport:
    """The report with its chart drawn at `path`, or with the note why there is none."""
    drawing = time.monotonic()
    try:
        report = replace(report, chart_path=draw_chart(report, path))
    except ChartUnavailable as exc:
        report = replace(report, chart_note=str(exc))
    report.extra["chart_seconds"] = round(time.monotonic() - drawing, 3)
    return report


def _run_types(run: _Run, estimates: Sequence[StepEstimate]) -> list[Candidate]:
    plan, options = run.plan, run.plan.options
    candidates: list[Candidate] = []
    for planned in plan.types:
        if not planned.fits:
            reason = Reason(TOO_LARGE_EXPECTED, {"ram": format_bytes(planned.ram_bytes),
                                                 "budget": format_bytes(options.budget_bytes)})
            candidates.append(Candidate(
                qtype=planned.qtype.label, size_bytes=planned.expected_bytes,
                ram_bytes=planned.ram_bytes, estimated=True, skipped=reason.english(),
                reason=reason,
            ))
            continue
        candidates.append(_run_type(run, planned))
    return candidates


def _run_type(run: _Run, planned: PlannedType) -> Candidate:
    """One type's two steps: quantize into the work directory, then measure the file if it
    fits the budget. A type llama.cpp refuses or cannot evaluate is skipped, saying why."""
    plan, qtype = run.plan, planned.qtype
    work_file = plan.work_dir / planned.target.name
    run.step += 1
    run.clock.step_started()
    run.report("quantize", qtype, 0, plan.source.tensor_count, _("starting the quantizer"))
    try:
        result = _quantize_step(run, qtype, work_file)
    except QuantizeCancelled:
        raise
    except QuantizeError as exc:  # llama.cpp refused this type for this model: try the others
        log.warning("auto quantization: %s failed: %s", qtype.label, exc)
        run.clock.step_finished()
        run.clock.skip()
        run.step += 1
        reason = Reason(FAILED, {"error": str(exc).splitlines()[0]})
        return Candidate(qtype=qtype.label, size_bytes=planned.expected_bytes,
                         ram_bytes=planned.ram_bytes, estimated=True, skipped=reason.english(),
                         reason=reason)
    run.clock.step_finished()
    ram = result.size_after + plan.kv.bytes
    run.step += 1
    if ram > plan.options.budget_bytes:
        work_file.unlink()
        run.clock.skip()
        reason = Reason(TOO_LARGE, {"ram": format_bytes(ram),
                                    "budget": format_bytes(plan.options.budget_bytes)})
        return Candidate(qtype=qtype.label, size_bytes=result.size_after, ram_bytes=ram,
                         skipped=reason.english(), reason=reason,
                         quantize_seconds=result.seconds)
    run.clock.step_started()
    try:
        return _measure_step(run, qtype, work_file, result, ram)
    except ModelError as exc:  # this file cannot be evaluated: say so, measure the others
        log.warning("auto quantization: measuring %s failed: %s", qtype.label, exc)
        work_file.unlink()
        reason = Reason(FAILED, {"error": exc})
        return Candidate(qtype=qtype.label, size_bytes=result.size_after, ram_bytes=ram,
                         skipped=reason.english(), reason=reason,
                         quantize_seconds=result.seconds)
    finally:
        run.clock.step_finished()


def _quantize_step(run: _Run, qtype: QuantType, work_file: Path) -> QuantizeResult:
    def on_tensor(p: QuantizeProgress) -> None:
        run.report("quantize", qtype, p.tensor_index, p.tensor_count,
                   _("tensor {index}/{count}", index=p.tensor_index, count=p.tensor_count))

    options = run.plan.options
    return quantize_model(
        run.plan.source.path, work_file, qtype, threads=options.threads,
        allow_requantize=options.allow_requantize, on_progress=on_tensor, cancel=run.cancel,
    )


def _measure_step(run: _Run, qtype: QuantType, work_file: Path, result: QuantizeResult,
                  ram: int) -> Candidate:
    """Perplexity of the quantized file, then a short generation-speed test on it."""
    options = run.plan.options
    measured = time.monotonic()
    run.report("perplexity", qtype, 0, 1, _("loading {file}", file=work_file.name))

    def on_chunk(index: int, n_chunks: int, ppl: float) -> None:
        run.report("perplexity", qtype, index, n_chunks,
                   _("chunk {index}/{count}", index=index, count=n_chunks))

    with Evaluator(work_file, n_ctx=options.n_ctx, n_batch=options.n_ctx,
                   threads=options.threads, cancel=run.cancel) as evaluator:
        ppl = perplexity_on(evaluator, options.text, max_chunks=options.chunks,
                            on_chunk=on_chunk)
        run.report("speed", qtype, 0, 1, _("generation speed"))
        speed_started = time.monotonic()
        so_far = result.seconds + (speed_started - measured)
        speed = measure_generation(evaluator, min_tokens=2, warm_up=False,
                                   max_seconds=SPEED_SHARE * so_far)
        speed_seconds = time.monotonic() - speed_started
    return Candidate(
        qtype=qtype.label, size_bytes=result.size_after, ram_bytes=ram, ppl=ppl.ppl,
        ppl_error=ppl.stderr, tokens_per_second=speed.tokens_per_second, path=work_file,
        quantize_seconds=result.seconds, measure_seconds=time.monotonic() - measured,
        speed_seconds=speed_seconds,
    )


def _keep_files(plan: AutoPlan, candidates: Sequence[Candidate]) -> list[Candidate]:
    """Move the chosen file (every measured one with keep_all) to its place; drop the rest."""
    kept: list[Candidate] = []
    for c in candidates:
        if c.path is None:
            kept.append(c)
            continue
        if c.chosen or plan.options.keep_all:
            target = plan.output_dir / c.path.name
            os.replace(c.path, target)
            kept.append(replace(c, path=target))
        else:
            c.path.unlink()
            kept.append(replace(c, path=None))
    return kept


def _write_json(path: Path, report: AutoQuantizeReport) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()
