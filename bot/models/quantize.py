"""Quantize a GGUF model with llama.cpp's own quantizer: the entry points, sync and async.

The input and output are checked first (`bot.models.quantize_output`), then llama.cpp runs in a
child process (`bot.models.quantizer_process`) because it can abort() the whole process on a bad
input. The output is written to a hidden file next to the target and renamed into place only
when complete, so a failure or a cancel leaves nothing at the target.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import secrets
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ModelError, QuantizeError
from bot.i18n import _
from bot.llama.gguf_file import GGUFInfo, read_gguf_info
from bot.models.progress import format_bytes
from bot.models.quant_types import QuantType, parse_quant_type
from bot.models.quantize_output import check_disk_space, check_output_path
from bot.models.quantizer_process import ProgressCallback, QuantizeProgress, QuantizerProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeResult:
    """What a finished quantization wrote: its paths, sizes in bytes, time and tensor count."""

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
    check_output_path(src, dst)
    _check_requantize(info, qtype, allow_requantize)
    check_disk_space(info, qtype, dst)

    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.part")
    started = time.monotonic()
    try:
        QuantizerProcess(info, tmp, qtype, threads=threads, allow_requantize=allow_requantize,
                         on_progress=on_progress, cancel=cancel).run()
        try:
            output = read_gguf_info(tmp)
        except ModelError as exc:
            raise QuantizeError(_("llama.cpp wrote an unreadable file: {error}",
                                  error=exc)) from exc
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

    # In this task's context: the worker's errors and progress are in the chat's language.
    context = contextvars.copy_context()
    job = loop.run_in_executor(None, context.run, lambda: quantize_model(
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


# -- checks of the input -------------------------------------------------------------------

def _check_input(src: Path) -> GGUFInfo:
    try:
        return read_gguf_info(src)
    except ModelError as exc:
        raise QuantizeError(_("cannot quantize: {error}", error=exc)) from exc


def _check_requantize(info: GGUFInfo, qtype: QuantType, allow_requantize: bool) -> None:
    quantized = info.quantized_types
    if quantized and not allow_requantize:
        raise QuantizeError(_(
            "{file} is already quantized ({type}); quantizing it again to {qtype} loses more "
            "quality than quantizing the F16/F32 original. Use the original, or pass "
            "--allow-requantize to do it anyway.", file=info.path.name,
            type=info.file_type_name, qtype=qtype.label,
        ))
