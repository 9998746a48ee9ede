"""Perplexity of a model on a text, computed the way llama.cpp's perplexity tool computes it.

The whole text is tokenized (with a BOS first when the model adds one) and cut into
non-overlapping chunks of n_ctx tokens. Each chunk is evaluated from an empty cache, its first
token replaced by BOS when the model adds BOS, and only its second half is scored, so every
scored token sees at least n_ctx/2 tokens of context: the negative log-likelihood of token i+1
given the tokens up to i. PPL is exp(mean NLL); its error is that of the mean NLL carried
through exp by the delta method, exactly as llama.cpp prints it. Runs in the calling thread.
"""

from __future__ import annotations

import importlib.resources
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import NDArray

from bot.errors import UserError
from bot.i18n import _
from bot.models.evaluator import Evaluator

SAMPLE_TEXT_RESOURCE = "data/perplexity-sample.txt"

ChunkCallback = Callable[[int, int, float], None]
"""Called after each chunk with (chunk number from 1, number of chunks, PPL so far)."""


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    stderr: float
    """The uncertainty llama.cpp prints after `+/-` (NaN if it cannot be computed)."""
    n_chunks: int
    n_tokens_scored: int
    seconds: float

    def summary(self) -> str:
        """The last line of llama.cpp's perplexity tool."""
        return f"Final estimate: PPL = {self.ppl:.4f} +/- {self.stderr:.5f}"


def load_sample_text() -> str:
    """The English sample shipped with alpaca-bot (about 1,200 tokens, written for it)."""
    return importlib.resources.files("bot").joinpath(SAMPLE_TEXT_RESOURCE).read_text("utf-8")


def format_chunk_estimate(index: int, ppl: float) -> str:
    """llama.cpp's running estimate for one chunk: `[3]12.3456,`."""
    return f"[{index}]{ppl:.4f},"


def chunk_printer(stream: TextIO) -> ChunkCallback:
    """An `on_chunk` that prints `[1]12.3456,[2]11.9876,...` as llama.cpp does, then a newline."""

    def on_chunk(index: int, n_chunks: int, ppl: float) -> None:
        stream.write(format_chunk_estimate(index, ppl))
        if index == n_chunks:
            stream.write("\n")
        stream.flush()

    return on_chunk


def compute_perplexity(
    model_path: Path,
    text: str,
    *,
    n_ctx: int = 512,
    n_batch: int = 512,
    threads: int | None = None,
    max_chunks: int | None = None,
    on_chunk: ChunkCallback | None = None,
    cancel: threading.Event | None = None,
) -> PerplexityResult:
    """The perplexity of the model at `model_path` on `text`, scored chunk by chunk.

    `max_chunks` bounds the run to the text's first chunks (llama.cpp's `--chunks`). Raises
    UserError when the text has fewer than 2 * n_ctx tokens, ModelError when the model cannot
    be loaded or evaluated, QuantizeCancelled when `cancel` is set. Blocking: run it on a
    worker thread from async code.
    """
    check_perplexity_args(n_ctx, n_batch, max_chunks)
    started = time.monotonic()
    with Evaluator(Path(model_path), n_ctx=n_ctx, n_batch=min(n_batch, n_ctx), threads=threads,
                   cancel=cancel) as evaluator:
        return perplexity_on(evaluator, text, max_chunks=max_chunks, on_chunk=on_chunk,
                             started=started)


def check_perplexity_args(n_ctx: int, n_batch: int, max_chunks: int | None = None) -> None:
    if n_ctx < 4:
        raise UserError(_("the context must be at least 4 tokens, not {n_ctx}", n_ctx=n_ctx))
    if n_batch < 1:
        raise UserError(_("the batch size must be at least 1, not {n_batch}", n_batch=n_batch))
    if max_chunks is not None and max_chunks < 1:
        raise UserError(_("the number of chunks must be at least 1, not {chunks}",
                          chunks=max_chunks))


def perplexity_on(
    evaluator: Evaluator,
    text: str,
    *,
    max_chunks: int | None = None,
    on_chunk: ChunkCallback | None = None,
    started: float | None = None,
) -> PerplexityResult:
    """`compute_perplexity` on a model already loaded, with the evaluator's context size."""
    started = time.monotonic() if started is None else started
    n_ctx = evaluator.n_ctx
    tokens = evaluator.tokenize(text)
    if len(tokens) < 2 * n_ctx:
        raise UserError(
            _("the text is too short for a context of {n_ctx}: perplexity needs at least "
              "{needed} tokens (two chunks), and the text has only {count}", n_ctx=n_ctx,
              needed=2 * n_ctx, count=len(tokens))
        )
    n_chunks = len(tokens) // n_ctx
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    first = n_ctx // 2
    nll_sum = nll2_sum = 0.0
    count = 0
    for i in range(n_chunks):
        evaluator.check_cancel()
        chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        if evaluator.add_bos:
            chunk[0] = evaluator.bos
        # Logits at positions first .. n_ctx-1; the last one predicts past the chunk.
        logits = evaluator.evaluate(chunk, first)
        targets = np.asarray(chunk[first + 1:], dtype=np.int64)
        nll = token_nll(logits[:-1], targets)
        nll_sum += float(nll.sum())
        nll2_sum += float(np.square(nll).sum())
        count += len(nll)
        if on_chunk is not None:
            on_chunk(i + 1, n_chunks, math.exp(nll_sum / count))
    mean = nll_sum / count
    variance = nll2_sum / count - mean * mean
    ppl = math.exp(mean)
    stderr = math.sqrt(variance / (count - 1)) * ppl if variance > 0 and count > 1 else math.nan
    return PerplexityResult(ppl=ppl, stderr=stderr, n_chunks=n_chunks, n_tokens_scored=count,
                            seconds=time.monotonic() - started)


def token_nll(logits: NDArray[np.float32], targets: NDArray[np.int64]) -> NDArray[np.float64]:
    """-log softmax(logits[i])[targets[i]] for each row, stable: the row's max is taken out."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, dtype=np.float64))
    picked = shifted[np.arange(len(targets)), targets].astype(np.float64)
    result: NDArray[np.float64] = log_sum - picked
    return result
