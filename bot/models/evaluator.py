"""One model and one single-sequence context on llama.cpp's low-level API, for measuring a model
file (perplexity, generation speed) rather than chatting with it. Runs in the calling thread.

A `cancel` event stops a long decode from inside llama.cpp (its abort callback) and raises
QuantizeCancelled, so `/quantize cancel` does not wait for a whole chunk of a 7B model.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.errors import ModelError, QuantizeCancelled
from bot.llama.gguf_file import check_gguf_magic

_ABORTED = 2  # llama_decode's return code after the abort callback said stop


class Evaluator:
    """A llama.cpp model and context on the low-level API: one sequence, logits on request."""

    def __init__(self, model_path: Path, *, n_ctx: int, n_batch: int, threads: int | None,
                 cancel: threading.Event | None = None) -> None:
        check_gguf_magic(model_path)
        import llama_cpp

        from bot.llama.cpu import physical_cores
        from bot.llama.loading import model_params, route_llama_log

        route_llama_log()  # keep llama.cpp's chatter out of the terminal
        llama_cpp.llama_backend_init()
        self._lib = llama_cpp
        self.n_ctx = n_ctx
        self._n_batch = n_batch
        self._cancel = cancel
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._abort: Any = None
        # model_params(): no AMX weight repacking, whose kernel crashes on prompt batches here.
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
        if cancel is not None:
            @llama_cpp.ggml_abort_callback
            def abort(_data: ctypes.c_void_p) -> bool:
                return cancel.is_set()

            self._abort = abort  # must outlive the context
            llama_cpp.llama_set_abort_callback(self._ctx, abort, ctypes.c_void_p(0))
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self._vocab))

    def __enter__(self) -> Evaluator:
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

    def check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise QuantizeCancelled("measurement cancelled")

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

    def clear(self) -> None:
        """Empty the KV cache."""
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)

    def evaluate(self, chunk: Sequence[int], first: int) -> NDArray[np.float32]:
        """Evaluate one chunk from an empty cache; the logits of positions first..len-1."""
        lib = self._lib
        self.clear()
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
            self._decode()
            if n_outputs:
                pointer = ctypes.cast(lib.llama_get_logits(self._ctx), ctypes.POINTER(ctypes.c_float))
                rows.append(np.ctypeslib.as_array(pointer, shape=(n_outputs, self.n_vocab)).copy())
        return np.concatenate(rows)

    def decode_one(self, token: int, pos: int) -> None:
        """Decode a single token at `pos` (with its logits), as one step of generation does."""
        batch = self._batch
        batch.token[0] = token
        batch.pos[0] = pos
        batch.n_seq_id[0] = 1
        batch.seq_id[0][0] = 0
        batch.logits[0] = True
        batch.n_tokens = 1
        self._decode()

    def _decode(self) -> None:
        self.check_cancel()
        code = self._lib.llama_decode(self._ctx, self._batch)
        if code == _ABORTED and self._cancel is not None and self._cancel.is_set():
            raise QuantizeCancelled("measurement cancelled")
        if code != 0:
            raise ModelError(f"llama_decode failed with code {code} (context {self.n_ctx})")
