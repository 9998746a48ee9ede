"""Checks around llama.cpp: the model file before loading it, and llama.cpp's log routed to logging."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

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
    import os

    return max(1, (os.cpu_count() or 2) // 2)
