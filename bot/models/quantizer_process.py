"""The parent's side of the quantizer's child process: start it, turn its messages into
progress (tensor n of N, elapsed, ETA), and say why it failed, with the tail of its log.

The child (`bot.models.quantizer_child`) writes one JSON message a line on its stdout; stray
output of C code goes to its stderr, whose tail is kept for error messages too.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bot.errors import QuantizeCancelled, QuantizeError
from bot.llama.gguf_file import GGUFInfo
from bot.models.quant_types import QuantType

_llama_log = logging.getLogger("llama.cpp")


@dataclass(frozen=True)
class QuantizeProgress:
    """One tensor done: `tensor_index` of `tensor_count`, with times in seconds."""

    tensor_index: int
    tensor_count: int
    tensor_name: str
    fraction: float
    """Share of the input's bytes done (tensors differ in size, so not index/count)."""
    elapsed: float
    eta: float | None
    """Seconds left at the rate seen since the first tensor; None until there is a rate."""


ProgressCallback = Callable[[QuantizeProgress], object]

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# `python -c` puts the working directory first on sys.path, where another `bot` could hide
# ours: drop it, and find this package where the parent found it.
_CHILD_BOOTSTRAP = (
    "import sys; del sys.path[0]; root = sys.argv.pop(1)\n"
    "if root not in sys.path: sys.path.append(root)\n"
    "from bot.models.quantizer_child import child_main; sys.exit(child_main(sys.argv))"
)
_TAIL_LINES = 12
_END = object()


class QuantizerProcess:
    """One child process: start it, relay its messages as progress, explain how it ended."""

    def __init__(self, info: GGUFInfo, output: Path, qtype: QuantType, *, threads: int | None,
                 allow_requantize: bool, on_progress: ProgressCallback | None,
                 cancel: threading.Event | None) -> None:
        self._job: dict[str, Any] = {
            "src": os.fsdecode(info.path), "dst": os.fsdecode(output), "ftype": int(qtype),
            "nthread": max(threads or 0, 0), "allow_requantize": allow_requantize,
        }
        self._on_progress = on_progress
        self._cancel = cancel
        self._sizes = {t.name: t.n_bytes for t in info.tensors}
        self._total_bytes = sum(self._sizes.values())
        self._log_tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self._stderr_tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self._messages: queue.Queue[Any] = queue.Queue()
        self._code: int | None = None

    def run(self) -> None:
        """Run the child to its end, reporting progress; raise QuantizeError if it failed or
        `cancel` was set (the child is killed then)."""
        started = time.monotonic()
        # A new session keeps a terminal's Ctrl+C away from the child: the parent decides.
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD_BOOTSTRAP, os.fspath(_PACKAGE_ROOT),
             json.dumps(self._job)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert process.stdout is not None and process.stderr is not None
        readers = [
            threading.Thread(target=self._read_messages, args=(process.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(process.stderr,), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            self._relay(started)
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            for reader in readers:
                reader.join(timeout=5)
        self._raise_on_failure(returncode)

    def _relay(self, started: float) -> None:
        done_bytes = 0
        # The rate is measured from the first tensor on, leaving out start-up and model loading.
        first: tuple[float, int] | None = None
        while True:
            if self._cancel is not None and self._cancel.is_set():
                raise QuantizeCancelled("quantization cancelled")
            try:
                message = self._messages.get(timeout=0.05)
            except queue.Empty:
                continue
            if message is _END:
                return
            kind = message.get("kind")
            if kind == "result":
                self._code = int(message["code"])
                continue
            line = str(message.get("line", ""))
            self._log_tail.append(line)
            _llama_log.debug("%s", line)
            if kind != "tensor":
                continue
            done_bytes += self._sizes.get(message["name"], 0)
            index, count = int(message["index"]), int(message["count"])
            if self._total_bytes:
                fraction = min(done_bytes / self._total_bytes, 1.0)
            else:
                fraction = index / count
            now = time.monotonic()
            eta = None
            if first is None:
                first = (now, done_bytes)
            elif done_bytes > first[1]:
                rate = (done_bytes - first[1]) / (now - first[0])
                eta = (self._total_bytes - done_bytes) / rate if rate > 0 else None
            elapsed = now - started
            if self._on_progress is not None:
                self._on_progress(QuantizeProgress(
                    tensor_index=index, tensor_count=count, tensor_name=str(message["name"]),
                    fraction=fraction, elapsed=elapsed, eta=eta,
                ))

    def _read_messages(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                try:
                    message = json.loads(raw)
                except ValueError:
                    message = {"kind": "log", "line": raw.decode("utf-8", "replace").rstrip()}
                self._messages.put(message)
        finally:
            self._messages.put(_END)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                _llama_log.debug("%s", line)

    def _raise_on_failure(self, returncode: int) -> None:
        name = Path(self._job["src"]).name
        if returncode == 0 and self._code == 0:
            return
        if self._code not in (None, 0):
            reason = next((line.split("failed to quantize:", 1)[1].strip()
                           for line in reversed(self._log_tail) if "failed to quantize:" in line),
                          f"error code {self._code}")
            raise QuantizeError(f"llama.cpp could not quantize {name}: {reason}{self._tail()}")
        if returncode < 0:
            try:
                how = signal.Signals(-returncode).name
            except ValueError:
                how = f"signal {-returncode}"
            raise QuantizeError(
                f"the quantizer crashed ({how}) while quantizing {name}{self._tail()}"
            )
        raise QuantizeError(
            f"the quantizer failed (exit code {returncode}) while quantizing {name}{self._tail()}"
        )

    def _tail(self) -> str:
        lines = [*self._log_tail, *self._stderr_tail][-_TAIL_LINES:]
        return "; last output:\n" + "\n".join(lines) if lines else ""
