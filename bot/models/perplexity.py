"""Perplexity of a model on a text, computed the way llama.cpp's perplexity tool computes it.

The whole text is tokenized (with a BOS first when the model adds one) and cut into
non-overlapping chunks of n_ctx tokens. Each chunk is evaluated from an empty cache, its first
token replaced by BOS when the model adds BOS, and only its second half is scored, so every
scored token sees at least n_ctx/2 tokens of context: the negative log-likelihood of token i+1
given the tokens up to i. PPL is exp(mean NLL); its error is that of the mean NLL carried
through exp by the delta method, exactly as llama.cpp prints it. Runs in the calling thread.
"""

from __future__ import annotations

import ctypes
import importlib.resources
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from bot.errors import ModelError, UserError
from bot.models.gguf_file import check_gguf_magic

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
    on_chunk: ChunkCallback | None = None,
) -> PerplexityResult:
    """The perplexity of the model at `model_path` on `text`, scored chunk by chunk.

    Raises UserError when the text has fewer than 2 * n_ctx tokens, ModelError when the model
    cannot be loaded or evaluated. Blocking: run it on a worker thread from async code.
    """
    if n_ctx < 4:
        raise UserError(f"the context must be at least 4 tokens, not {n_ctx}")
    if n_batch < 1:
        raise UserError(f"the batch size must be at least 1, not {n_batch}")
    started = time.monotonic()
    with _Evaluator(Path(model_path), n_ctx, min(n_batch, n_ctx), threads) as evaluator:
        tokens = evaluator.tokenize(text)
        if len(tokens) < 2 * n_ctx:
            raise UserError(
                f"the text is too short for a context of {n_ctx}: perplexity needs at least "
                f"{2 * n_ctx} tokens (two chunks), and the text has only {len(tokens)}"
            )
        n_chunks = len(tokens) // n_ctx
        first = n_ctx // 2
        nll_sum = nll2_sum = 0.0
        count = 0
        for i in range(n_chunks):
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


class _Evaluator:
    """A llama.cpp model and context on the low-level API: one sequence, logits on request."""

    def __init__(self, model_path: Path, n_ctx: int, n_batch: int, threads: int | None) -> None:
        check_gguf_magic(model_path)
        import llama_cpp

        from bot.engine.native import model_params, physical_cores, route_llama_log

        route_llama_log()  # keep llama.cpp's chatter out of the terminal
        llama_cpp.llama_backend_init()
        self._lib = llama_cpp
        self._n_ctx = n_ctx
        self._n_batch = n_batch
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._model = llama_cpp.llama_model_load_from_file(
            str(model_path).encode(), model_params()
        )
        if not self._model:
            raise ModelError(f"llama.cpp cannot load {model_path} (is it a supported model?)")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = threads or physical_cores()
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            self.close()
            raise ModelError(f"llama.cpp cannot create a context of {n_ctx} for {model_path}")
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self._vocab))

    def __enter__(self) -> _Evaluator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            self._lib.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            self._lib.llama_model_free(self._model)
            self._model = None

    def tokenize(self, text: str) -> list[int]:
        """Plain text (no special-token parsing), with BOS first when the model adds one."""
        data = text.encode("utf-8")
        size = len(data) + 1
        while True:
            buffer = (self._lib.llama_token * size)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buffer, size, False, False)
            if n >= 0:
                break
            size = -n
        tokens = list(buffer[:n])
        return [self.bos, *tokens] if self.add_bos else tokens

    def evaluate(self, chunk: Sequence[int], first: int) -> NDArray[np.float32]:
        """Evaluate one chunk from an empty cache; the logits of positions first..len-1."""
        lib = self._lib
        lib.llama_memory_clear(lib.llama_get_memory(self._ctx), True)
        batch = self._batch
        rows: list[NDArray[np.float32]] = []
        for start in range(0, len(chunk), self._n_batch):
            size = min(self._n_batch, len(chunk) - start)
            n_outputs = 0
            for k in range(size):
                pos = start + k
                batch.token[k] = chunk[pos]
                batch.pos[k] = pos
                batch.n_seq_id[k] = 1
                batch.seq_id[k][0] = 0
                wanted = pos >= first
                batch.logits[k] = wanted
                n_outputs += wanted
            batch.n_tokens = size
            code = lib.llama_decode(self._ctx, batch)
            if code != 0:
                raise ModelError(f"llama_decode failed with code {code} (context {self._n_ctx})")
            if n_outputs:
                pointer = ctypes.cast(lib.llama_get_logits(self._ctx), ctypes.POINTER(ctypes.c_float))
                rows.append(np.ctypeslib.as_array(pointer, shape=(n_outputs, self.n_vocab)).copy())
        return np.concatenate(rows)
