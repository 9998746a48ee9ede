"""How long an auto run will take here: this machine's speed, measured on the source model in
about a second, turned into an estimate for each step, and refined as steps finish.

The measurement loads the source and times one batch of prompt tokens, which also checks that
the text is long enough before anything is quantized.
Perplexity is compute-bound, so its time follows from the prompt rate and the tokens it
evaluates. The quantizer has no such probe: it streams the file through memory, at a rate per
type measured on two cores here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import UserError
from bot.i18n import _
from bot.models.evaluator import Evaluator
from bot.models.quant_types import QuantType

# llama.cpp's quantizer on two cores, in source bytes a second for q4_0 (13.1 GiB of a
# 7B-shaped f16 in 35.5 s, the demo model's 271 MB in about a second past the child's start):
# it streams the file through memory, so no probe of the arithmetic predicts it better.
_QUANTIZE_BYTES_PER_S = 3.0e8
_QUANTIZED_PROMPT_SPEEDUP = 2.0
"""Perplexity runs on the quantized file in batches of n_ctx, the probe on the f16 source in
one batch of 64: measured here, the former evaluates about 2-2.5 times as many tokens a second."""
_QUANTIZE_COST = {  # relative to q4_0 on the reference machine
    QuantType.Q4_0: 1.0, QuantType.Q4_1: 1.0, QuantType.Q5_0: 1.1, QuantType.Q5_1: 1.1,
    QuantType.Q8_0: 1.2, QuantType.Q4_K_M: 1.9, QuantType.Q5_K_M: 2.0, QuantType.Q6_K: 2.1,
}
_CHILD_START_SECONDS = 1.0  # a Python child importing llama_cpp, before the first tensor
_LOAD_BYTES_PER_S = 1.0e9  # mapping a file from the page cache
SPEED_SHARE = 0.03
"""The generation-speed test takes at most this share of its type's other steps."""

_PROBE_TOKENS = 64


@dataclass(frozen=True)
class MachineSpeed:
    """What the probe on the source measured."""

    prompt_tokens_per_second: float
    parameters: int
    source_bytes: int
    text_tokens: int
    seconds: float


def measure_machine(source: Path, text: str, *, n_ctx: int, parameters: int, source_bytes: int,
                    threads: int | None, cancel: threading.Event | None = None) -> MachineSpeed:
    """Load the source, check the text has two chunks of `n_ctx`, time one batch of it.

    The batch includes paging the weights in, as each type's perplexity run does: no warm-up,
    and no single-token decodes, which on a busy machine cost more than they tell.
    """
    started = time.monotonic()
    with Evaluator(source, n_ctx=n_ctx, n_batch=n_ctx, threads=threads,
                   cancel=cancel) as evaluator:
        tokens = evaluator.tokenize(text)
        if len(tokens) < 2 * n_ctx:
            raise UserError(
                _("the text is too short for a context of {n_ctx}: perplexity needs at least "
                  "{needed} tokens (two chunks), and the text has only {count}", n_ctx=n_ctx,
                  needed=2 * n_ctx, count=len(tokens))
            )
        batch = tokens[:min(_PROBE_TOKENS, n_ctx)]
        probe = time.perf_counter()
        evaluator.evaluate(batch, len(batch) - 1)
        prompt_seconds = time.perf_counter() - probe
    return MachineSpeed(
        prompt_tokens_per_second=len(batch) / max(prompt_seconds, 1e-6),
        parameters=parameters, source_bytes=source_bytes, text_tokens=len(tokens),
        seconds=time.monotonic() - started,
    )


@dataclass(frozen=True)
class StepEstimate:
    quantize: float
    measure: float


def estimate_steps(speed: MachineSpeed, types: Sequence[QuantType], *, expected_sizes:
                   Sequence[int], n_ctx: int, chunks: int | None) -> list[StepEstimate]:
    """Seconds for each type's quantize step and measure step (perplexity + speed)."""
    n_chunks = speed.text_tokens // n_ctx
    if chunks is not None:
        n_chunks = min(n_chunks, chunks)
    perplexity = n_chunks * n_ctx / (speed.prompt_tokens_per_second * _QUANTIZED_PROMPT_SPEEDUP)
    estimates = []
    for qtype, size in zip(types, expected_sizes, strict=True):
        rate = _QUANTIZE_BYTES_PER_S / _QUANTIZE_COST.get(qtype, 2.0)
        quantize = _CHILD_START_SECONDS + speed.source_bytes / rate
        measure = size / _LOAD_BYTES_PER_S + perplexity
        estimates.append(StepEstimate(quantize, measure + SPEED_SHARE * (quantize + measure)))
    return estimates


class RunClock:
    """Elapsed time and the time left: the plan's estimates, scaled by how the finished steps
    compared with theirs; within a step, the step's own rate once it is 5% done."""

    def __init__(self, planned: Sequence[float], *, started: float | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._planned = list(planned)
        self._now = now
        self._done = 0
        self._actual = 0.0
        self.started = now() if started is None else started
        self._step_started = self.started

    @property
    def elapsed(self) -> float:
        return self._now() - self.started

    def step_started(self) -> None:
        self._step_started = self._now()

    def step_finished(self) -> None:
        self._actual += self._now() - self._step_started
        self._done += 1

    def skip(self) -> None:
        """The next planned step will not run (its type turned out not to fit)."""
        if self._done < len(self._planned):
            self._planned.pop(self._done)

    def remaining(self, step_fraction: float = 0.0) -> float:
        """Seconds left, the running step `step_fraction` done."""
        planned_done = sum(self._planned[:self._done])
        ratio = self._actual / planned_done if planned_done > 0 else 1.0
        current = self._planned[self._done] if self._done < len(self._planned) else 0.0
        in_step = self._now() - self._step_started
        if step_fraction > 0.05:  # the step's own rate says more than the plan
            current_left = in_step * (1 - step_fraction) / step_fraction
        else:
            current_left = max(current * ratio - in_step, 0.0)
        return current_left + ratio * sum(self._planned[self._done + 1:])
