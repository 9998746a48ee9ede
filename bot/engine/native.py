"""What both local engines need around llama.cpp: the model file checked before loading it,
llama.cpp's log routed to logging, the thread count, and the facts of a loaded model."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bot.engine.base import ModelInfo
from bot.engine.tokens import token_text
from bot.models.gguf_file import read_gguf_info

_llama_log = logging.getLogger("llama.cpp")
_callback: Any = None  # the ctypes callback must outlive every call llama.cpp makes to it


def check_model_file(path: Path) -> None:
    """Fail early, with one clear line, on a missing, unreadable, non-GGUF or truncated model
    file (reading the header takes milliseconds; llama.cpp would only log its reasons)."""
    read_gguf_info(path)


def route_llama_log() -> None:
    """Send llama.cpp's own log to the `llama.cpp` logger instead of stderr (once per process)."""
    global _callback
    if _callback is not None:
        return
    import llama_cpp

    levels = {3: logging.WARNING, 4: logging.ERROR}  # ggml: 1 debug, 2 info, 3 warn, 4 error

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            _llama_log.log(levels.get(level, logging.DEBUG), "%s", message)

    _callback = forward
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


def cpu_has_amx() -> bool:
    """Whether the CPU has Intel AMX tiles (Sapphire Rapids and later)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        pass
    return False


def model_params() -> Any:
    """llama.cpp's default model parameters, as every model this process loads uses them.

    On a CPU with AMX, llama.cpp repacks weights into its AMX buffer type, and its AMX matrix
    kernel crashes (SIGSEGV in ggml_backend_amx_mul_mat) on a batch of prompt tokens of the
    demo model, in the wheel and in llama-server alike (single tokens are fine; an AMX program
    of our own ran correctly on the same machine). There the extra buffer types are turned off,
    as `llama-server --no-repack` does: the plain CPU kernels are used for every weight.
    """
    import llama_cpp

    return _safe(llama_cpp.llama_model_default_params)


def _safe(default: Callable[[], Any]) -> Any:
    params = default()
    if cpu_has_amx():
        params.use_extra_bufts = False
    return params


_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def high_level_model_params() -> Iterator[None]:
    """While loading a high-level `Llama`: it builds its parameters from
    `llama_model_default_params()` and has no argument for the buffer types, so that function
    answers with `model_params()` meanwhile."""
    import llama_cpp.llama_cpp as low_level

    with _PATCH_LOCK:
        original = low_level.llama_model_default_params
        low_level.llama_model_default_params = lambda: _safe(original)
        try:
            yield
        finally:
            low_level.llama_model_default_params = original


def physical_cores() -> int:
    """Physical cores (not hyper-threads): llama.cpp runs best with one thread per core."""
    seen: set[str] = set()
    base = Path("/sys/devices/system/cpu")
    for topology in base.glob("cpu[0-9]*/topology/thread_siblings_list"):
        try:
            seen.add(topology.read_text().strip())
        except OSError:
            continue
    if seen:
        return len(seen)
    return max(1, (os.cpu_count() or 2) // 2)


def model_meta(model: Any, key: str) -> str | None:
    """A metadata value of a loaded model (`llama_model *`) as text, or None if it has none."""
    import llama_cpp

    size = 4096
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, size)
        if n < 0:
            return None
        if n < size:
            return buffer.value.decode("utf-8", errors="replace")
        size = n + 1


def describe_model(model: Any, vocab: Any, path: Path, *, n_ctx: int) -> ModelInfo:
    """The `ModelInfo` of a loaded model whose context holds `n_ctx` tokens per chat."""
    import llama_cpp

    return ModelInfo(
        path=path,
        name=model_meta(model, "general.name") or path.stem,
        n_ctx_train=int(llama_cpp.llama_model_n_ctx_train(model)),
        n_ctx=n_ctx,
        chat_template=model_meta(model, "tokenizer.chat_template"),
        bos_token=token_text(vocab, int(llama_cpp.llama_vocab_bos(vocab))),
        eos_token=token_text(vocab, int(llama_cpp.llama_vocab_eos(vocab))),
        file_type=model_meta(model, "general.file_type") or "",
        size_bytes=path.stat().st_size,
    )


def kv_bytes_per_token(model: Any, kv_type: str) -> int:
    """Bytes one token takes in the KV cache: keys and values of every layer."""
    import llama_cpp

    head_dim = llama_cpp.llama_model_n_embd(model) // llama_cpp.llama_model_n_head(model)
    kv_width = 2 * llama_cpp.llama_model_n_head_kv(model) * head_dim
    element = 34 / 32 if kv_type == "q8_0" else 2  # q8_0: 32 values in 34 bytes
    return int(llama_cpp.llama_model_n_layer(model) * kv_width * element)
