"""Loading a model with llama.cpp as every part of this program does: the file checked first,
llama.cpp's log routed to logging, and the model parameters that are safe on this CPU."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bot.llama.cpu import cpu_has_amx
from bot.llama.gguf_file import read_gguf_info

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
