"""Quantize a GGUF model with llama.cpp's own quantizer, run in a child process.

llama.cpp can abort() the whole process on a bad input, so `llama_model_quantize` runs in a
child Python process (`_child_main`). The child turns llama.cpp's per-tensor log lines into JSON
messages on its stdout; the parent keeps the log's tail for error messages and reports progress
(tensor n of N, elapsed, ETA). The output is written to a hidden file next to the target and
renamed into place only when complete, so a failure or a cancel leaves nothing at the target.
"""

from __future__ import annotations

import asyncio
import ctypes
import enum
import json
import logging
import math
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from bot.errors import ModelError, QuantizeError
from bot.models.gguf_file import GGUFInfo, TensorInfo, read_gguf_info
from bot.models.progress import format_bytes

log = logging.getLogger(__name__)
_llama_log = logging.getLogger("llama.cpp")


class QuantType(enum.IntEnum):
    """The output types llama.cpp can make without an importance matrix; values are llama_ftype."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 7
    Q5_0 = 8
    Q5_1 = 9
    Q2_K = 10
    Q3_K_S = 11
    Q3_K_M = 12
    Q3_K_L = 13
    Q4_K_S = 14
    Q4_K_M = 15
    Q5_K_S = 16
    Q5_K_M = 17
    Q6_K = 18
    IQ4_NL = 25
    IQ3_S = 26
    IQ3_M = 27
    IQ4_XS = 30
    BF16 = 32
    TQ1_0 = 36
    TQ2_0 = 37
    MXFP4_MOE = 38
    Q1_0 = 40
    Q2_0 = 41

    @property
    def label(self) -> str:
        """The name used on the command line: q4_0, q4_k_m, f16."""
        return self.name.lower()

    @property
    def description(self) -> str:
        return _DETAILS[self].description

    @property
    def bits_per_weight(self) -> float:
        """About how many bits a weight of a LLaMA-7B-shaped model takes, mixes included."""
        return _DETAILS[self].bits_per_weight

    @property
    def is_float(self) -> bool:
        return self in (QuantType.F32, QuantType.F16, QuantType.BF16)


@dataclass(frozen=True)
class _TypeDetails:
    description: str
    bits_per_weight: float
    fallback_bits: float | None = None
    """Bits per weight of the type llama.cpp falls back to for rows not a multiple of 256."""


_DETAILS: Mapping[QuantType, _TypeDetails] = {
    QuantType.F32: _TypeDetails("32-bit float, no quantization", 32.0),
    QuantType.F16: _TypeDetails("16-bit float, no quantization", 16.0),
    QuantType.BF16: _TypeDetails("16-bit bfloat, no quantization", 16.0),
    QuantType.Q8_0: _TypeDetails("8.5 bpw, nearly lossless", 8.5),
    QuantType.Q6_K: _TypeDetails("6.6 bpw k-quant, nearly lossless", 6.6, 8.5),
    QuantType.Q5_1: _TypeDetails("6.0 bpw legacy 5-bit with offset", 6.0),
    QuantType.Q5_0: _TypeDetails("5.5 bpw legacy 5-bit", 5.5),
    QuantType.Q5_K_M: _TypeDetails("5.7 bpw k-quant mix, very low loss", 5.7, 6.0),
    QuantType.Q5_K_S: _TypeDetails("5.5 bpw k-quant, very low loss", 5.6, 6.0),
    QuantType.Q4_1: _TypeDetails("5.0 bpw legacy 4-bit with offset (the Alpaca guide's 3)", 5.0),
    QuantType.Q4_0: _TypeDetails("4.5 bpw legacy 4-bit (the Alpaca guide's 2)", 4.5),
    QuantType.Q4_K_M: _TypeDetails("4.9 bpw k-quant mix, the usual choice", 4.9, 5.5),
    QuantType.Q4_K_S: _TypeDetails("4.6 bpw k-quant", 4.6, 5.5),
    QuantType.IQ4_NL: _TypeDetails("4.5 bpw non-linear 4-bit", 4.6),
    QuantType.IQ4_XS: _TypeDetails("4.25 bpw non-linear 4-bit", 4.5, 4.6),
    QuantType.Q3_K_L: _TypeDetails("4.3 bpw 3-bit k-quant mix, noticeable loss", 4.3, 4.6),
    QuantType.Q3_K_M: _TypeDetails("3.9 bpw 3-bit k-quant mix, noticeable loss", 3.9, 4.6),
    QuantType.Q3_K_S: _TypeDetails("3.5 bpw 3-bit k-quant, high loss", 3.5, 4.6),
    QuantType.IQ3_M: _TypeDetails("3.7 bpw 3-bit i-quant mix, high loss", 3.9, 4.6),
    QuantType.IQ3_S: _TypeDetails("3.4 bpw 3-bit i-quant, high loss", 3.6, 4.6),
    QuantType.Q2_K: _TypeDetails("3.4 bpw 2-bit k-quant mix, very high loss", 3.4, 4.6),
    QuantType.Q2_0: _TypeDetails("2.25 bpw 2-bit, for models trained for it", 2.4),
    QuantType.TQ2_0: _TypeDetails("2.1 bpw ternary, only for ternary (BitNet) models", 2.3, 4.6),
    QuantType.TQ1_0: _TypeDetails("1.7 bpw ternary, only for ternary (BitNet) models", 1.9, 4.6),
    QuantType.Q1_0: _TypeDetails("1.1 bpw 1-bit, only for 1-bit trained models", 1.2),
    QuantType.MXFP4_MOE: _TypeDetails("MXFP4 experts, Q8_0 elsewhere (MoE models)", 8.5),
}

QUANT_TYPES: Mapping[str, QuantType] = MappingProxyType({t.label: t for t in QuantType})
"""name -> QuantType (an int equal to llama.cpp's llama_ftype), in llama_ftype order."""

# llama.cpp knows these but refuses them without an importance matrix (IQ3_XS quantizes some
# matrices to IQ3_XXS), which alpaca-bot does not compute.
_NEEDS_IMATRIX = ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs",
                  "q2_k_s")


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


@dataclass(frozen=True)
class QuantizeResult:
    source: Path
    output: Path
    qtype: QuantType
    size_before: int
    size_after: int
    seconds: float
    tensor_count: int

    @property
    def ratio(self) -> float:
        """Output size over input size."""
        return self.size_after / self.size_before if self.size_before else math.nan


ProgressCallback = Callable[[QuantizeProgress], object]


def parse_quant_type(text: str | int | QuantType) -> QuantType:
    """`q4_0`, `Q4_K_M`, or a llama_ftype number such as the Alpaca guide's `2` (q4_0) or `3`."""
    if isinstance(text, QuantType):
        return text
    raw = str(text).strip()
    if raw.isdigit():
        try:
            return QuantType(int(raw))
        except ValueError:
            pass
    else:
        found = QUANT_TYPES.get(raw.lower())
        if found is not None:
            return found
    if raw.lower() in _NEEDS_IMATRIX:
        reason = f"{raw} needs an importance matrix, which alpaca-bot does not compute"
    else:
        reason = f"unknown quantization type {raw!r}"
    choices = ", ".join(f"{t.label} ({t.value})" for t in QuantType)
    raise QuantizeError(f"{reason}; choose one of: {choices}")


def default_output_path(source: Path, qtype: str | int | QuantType) -> Path:
    """`model.Q4_1.gguf` -> `model.Q4_0.gguf`, `ggml-model-f16.gguf` -> `ggml-model-q4_0.gguf`,
    `model.gguf` -> `model-q4_0.gguf`: next to the source, the type replacing a type suffix."""
    qtype = parse_quant_type(qtype)
    stem = source.name[: -len(".gguf")] if source.name.lower().endswith(".gguf") else source.stem
    match = _TYPE_SUFFIX.search(stem)
    if match:
        label = qtype.name if match.group(2).isupper() else qtype.label
        stem = stem[: match.start(2)] + label
    else:
        stem = f"{stem}-{qtype.label}"
    return source.with_name(f"{stem}.gguf")


_TYPE_SUFFIX = re.compile(
    r"([-._])(" + "|".join(sorted(map(re.escape, QUANT_TYPES), key=len, reverse=True))
    + r"|q4_1_some_f16)$",
    re.IGNORECASE,
)


def estimate_output_size(info: GGUFInfo, qtype: str | int | QuantType) -> int:
    """A generous estimate of the output file's size in bytes (for the free-space check)."""
    qtype = parse_quant_type(qtype)
    details = _DETAILS[qtype]
    total = info.data_offset + 4096  # the header, plus the keys llama.cpp adds
    for tensor in info.tensors:
        if not _is_quantizable(tensor):
            total += tensor.n_bytes
            continue
        bits = details.bits_per_weight
        if not qtype.is_float and tensor.name in ("output.weight", "token_embd.weight"):
            bits = max(bits, 8.5)  # llama.cpp keeps these at Q6_K or Q8_0
        elif details.fallback_bits is not None and tensor.shape[0] % 256:
            bits = max(bits, details.fallback_bits)
        total += math.ceil(tensor.n_elements * bits / 8) + 32  # + alignment padding
    return int(total * 1.05) + (16 << 20)


def quantize_model(
    src: Path,
    dst: Path,
    qtype: str | int | QuantType,
    *,
    threads: int | None = None,
    allow_requantize: bool = False,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> QuantizeResult:
    """Quantize `src` into `dst` (replaced if it exists) and return the sizes and time.

    Blocks until done: call it from a worker thread, or use `quantize_model_async`. Progress is
    reported on the calling thread; setting `cancel` kills the child and raises QuantizeError.
    `threads=None` lets llama.cpp use every hardware thread.
    """
    qtype = parse_quant_type(qtype)
    src, dst = Path(src).absolute(), Path(dst).absolute()
    info = _check_input(src)
    _check_output(src, dst)
    _check_requantize(info, qtype, allow_requantize)
    _check_disk_space(info, qtype, dst)

    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.part")
    started = time.monotonic()
    try:
        _QuantizerRun(info, tmp, qtype, threads, allow_requantize, on_progress, cancel).run()
        try:
            output = read_gguf_info(tmp)
        except ModelError as exc:
            raise QuantizeError(f"llama.cpp wrote an unreadable file: {exc}") from exc
        os.replace(tmp, dst)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()
    seconds = time.monotonic() - started
    log.info("quantized %s to %s (%s): %s -> %s in %.1f s", src, dst, qtype.label,
             format_bytes(info.size_bytes), format_bytes(output.size_bytes), seconds)
    return QuantizeResult(source=src, output=dst, qtype=qtype, size_before=info.size_bytes,
                          size_after=output.size_bytes, seconds=seconds,
                          tensor_count=output.tensor_count)


async def quantize_model_async(
    src: Path,
    dst: Path,
    qtype: str | int | QuantType,
    *,
    threads: int | None = None,
    allow_requantize: bool = False,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> QuantizeResult:
    """`quantize_model` on a worker thread; `on_progress` is called on the event loop.

    Cancelling the awaiting task (or setting `cancel`) kills the child and removes the partial
    file before the cancellation propagates.
    """
    loop = asyncio.get_running_loop()
    cancel = cancel if cancel is not None else threading.Event()

    def forward(progress: QuantizeProgress) -> None:
        if on_progress is not None:
            loop.call_soon_threadsafe(on_progress, progress)

    job = loop.run_in_executor(None, lambda: quantize_model(
        src, dst, qtype, threads=threads, allow_requantize=allow_requantize,
        on_progress=forward, cancel=cancel,
    ))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        cancel.set()
        with suppress(QuantizeError):
            await job  # the worker removes the partial file before it returns
        raise


# -- checks before starting ----------------------------------------------------------------

def _check_input(src: Path) -> GGUFInfo:
    try:
        return read_gguf_info(src)
    except ModelError as exc:
        raise QuantizeError(f"cannot quantize: {exc}") from exc


def _check_output(src: Path, dst: Path) -> None:
    if dst.is_dir():
        raise QuantizeError(f"the output {dst} is a directory; give a file name")
    if not dst.parent.is_dir():
        raise QuantizeError(f"the output directory {dst.parent} does not exist")
    same = src.resolve() == dst.resolve()
    if not same and dst.exists():
        with suppress(OSError):
            same = os.path.samefile(src, dst)
    if same:
        raise QuantizeError(
            f"the output {dst} is the input file; choose another output name"
        )


def _check_requantize(info: GGUFInfo, qtype: QuantType, allow_requantize: bool) -> None:
    quantized = info.quantized_types
    if quantized and not allow_requantize:
        raise QuantizeError(
            f"{info.path.name} is already quantized ({info.file_type_name}); quantizing it again "
            f"to {qtype.label} loses more quality than quantizing the F16/F32 original. "
            "Use the original, or pass --allow-requantize to do it anyway."
        )


def _check_disk_space(info: GGUFInfo, qtype: QuantType, dst: Path) -> None:
    needed = estimate_output_size(info, qtype)
    free = shutil.disk_usage(dst.parent).free
    if needed > free:
        raise QuantizeError(
            f"not enough disk space in {dst.parent}: the {qtype.label} file needs about "
            f"{format_bytes(needed)}, and only {format_bytes(free)} is free"
        )


def _is_quantizable(tensor: TensorInfo) -> bool:
    """What llama.cpp converts: matrices named *weight, except norms (others are copied)."""
    return (len(tensor.shape) >= 2 and tensor.name.endswith("weight")
            and "_norm.weight" not in tensor.name)


# -- the parent side of the child process ---------------------------------------------------

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# `python -c` puts the working directory first on sys.path, where another `bot` could hide
# ours: drop it, and find this package where the parent found it.
_CHILD_BOOTSTRAP = (
    "import sys; del sys.path[0]; root = sys.argv.pop(1)\n"
    "if root not in sys.path: sys.path.append(root)\n"
    "from bot.models.quantize import _child_main; sys.exit(_child_main(sys.argv))"
)
_TAIL_LINES = 12
_END = object()


class _QuantizerRun:
    """One child process: start it, relay its messages as progress, explain how it ended."""

    def __init__(self, info: GGUFInfo, tmp: Path, qtype: QuantType, threads: int | None,
                 allow_requantize: bool, on_progress: ProgressCallback | None,
                 cancel: threading.Event | None) -> None:
        self._info = info
        self._job: dict[str, Any] = {
            "src": os.fsdecode(info.path), "dst": os.fsdecode(tmp), "ftype": int(qtype),
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
                raise QuantizeError("quantization cancelled")
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


# -- the child process ----------------------------------------------------------------------

_TENSOR_LINE = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\s*\]\s+(\S+)")


def _child_main(argv: list[str]) -> int:
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
    sys.exit(_child_main(sys.argv))
