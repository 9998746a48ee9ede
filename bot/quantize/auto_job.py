"""`/quantize auto [TYPES...] [FILE]`: the bot's side of an auto quantization.

What to run (the source, the types, the budget and KV cache from the settings) and the run
itself on a worker thread, its progress brought back to the event loop as the chat's line
(`bot.quantize.texts`). `bot.quantize.jobs` records and schedules it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass

from bot.errors import QuantizeError, UserError
from bot.i18n import _
from bot.llama.cpu import on_own_thread
from bot.models.auto_plan import DEFAULT_TYPES, AutoPlan, AutoQuantizeOptions, plan_auto_quantize
from bot.models.auto_quantize import AutoProgress, run_auto_quantize
from bot.models.auto_report import AutoQuantizeReport
from bot.models.auto_timing import MachineSpeed
from bot.models.library import find_model
from bot.models.memory_budget import default_budget
from bot.models.perplexity import load_sample_text
from bot.models.quant_types import QuantType, parse_quant_type
from bot.quantize.texts import auto_progress_text
from bot.settings import Settings

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
        # On a thread that ends with the job: an executor's would slow the pool's decodes
        # down for as long as the bot runs (see on_own_thread).
        job = on_own_thread(lambda: context.run(
            run_auto_quantize, self.plan, on_progress=progress, on_estimate=estimated,
            cancel=self.cancel), name="auto-quantize")
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            self.cancel.set()  # the bot is stopping: end the step, remove the work directory
            await asyncio.gather(job, return_exceptions=True)
            raise

    def _progress(self, p: AutoProgress) -> None:
        self.last = p
        if p.stage != "probe":  # the queued message already says it measures the machine
            self.on_progress(auto_progress_text(self.plan, p, self.estimate))

    def at_step(self) -> tuple[int, int] | None:
        """The step it is at and the number of steps, None while it measures the machine."""
        p = self.last
        return None if p is None or p.stage == "probe" else (p.step, p.steps)
