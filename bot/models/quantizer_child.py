"""The quantizer's child process: run llama.cpp's `llama_model_quantize` on the job it is given
and report each of llama.cpp's log lines as a JSON message on stdout.

It runs apart from the bot because llama.cpp can abort() the whole process on a bad input; the
parent side is `bot.models.quantizer_process`. Messages: {"kind": "tensor", "index", "count",
"name", "line"} for a tensor's line, {"kind": "log", "line"} for any other, and last
{"kind": "result", "code"} with llama_model_quantize's return code.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

_TENSOR_LINE = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\s*\]\s+(\S+)")


def child_main(argv: list[str]) -> int:
    """Run llama_model_quantize for the job in argv[1]; JSON lines to stdout, one per log line."""
    job = json.loads(argv[1])
    # Our messages get the real stdout; anything else writing to fd 1 (C code) goes to stderr.
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)

    def send(message: dict[str, Any]) -> None:
        try:
            channel.write(json.dumps(message) + "\n")
        except OSError:
            os._exit(3)  # the parent is gone: stop writing a file nobody will rename

    _run_quantizer(job, send)
    return 0


_log_callback: Any = None  # the ctypes callback must outlive every call llama.cpp makes to it


def _run_quantizer(job: Mapping[str, Any], send: Callable[[dict[str, Any]], None]) -> None:
    global _log_callback
    import llama_cpp

    pending = [""]

    def handle(line: str) -> None:
        match = _TENSOR_LINE.match(line)
        if match:
            send({"kind": "tensor", "index": int(match.group(1)), "count": int(match.group(2)),
                  "name": match.group(3), "line": line})
        elif line.strip():
            send({"kind": "log", "line": line})

    # llama.cpp logs a tensor's line in several pieces: join them and split at newlines.
    @llama_cpp.llama_log_callback
    def on_log(_level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        pending[0] += text.decode("utf-8", "replace")
        *lines, pending[0] = pending[0].split("\n")
        for line in lines:
            handle(line)

    _log_callback = on_log
    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(job["ftype"])
    params.nthread = int(job["nthread"])
    params.allow_requantize = bool(job["allow_requantize"])
    code = llama_cpp.llama_model_quantize(
        os.fsencode(job["src"]), os.fsencode(job["dst"]), ctypes.byref(params)
    )
    if pending[0].strip():
        handle(pending[0])
    send({"kind": "result", "code": int(code)})


if __name__ == "__main__":
    sys.exit(child_main(sys.argv))
