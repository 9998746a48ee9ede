"""The output of a quantization: its default file name next to the source, its estimated size,
and the checks, made before the quantizer starts, that it can be written there."""

from __future__ import annotations

import math
import os
import re
import shutil
from contextlib import suppress
from pathlib import Path

from bot.errors import QuantizeError
from bot.i18n import _
from bot.llama.gguf_file import GGUFInfo, TensorInfo
from bot.models.progress import format_bytes
from bot.models.quant_types import QUANT_TYPES, QuantType, parse_quant_type


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


def model_stem(source: Path) -> str:
    """The name of a model file without `.gguf` and without a type suffix:
    `ggml-model-f16.gguf` -> `ggml-model`, `model.Q4_1.gguf` -> `model`."""
    stem = source.name[: -len(".gguf")] if source.name.lower().endswith(".gguf") else source.stem
    match = _TYPE_SUFFIX.search(stem)
    return stem[: match.start(1)] if match and match.start(1) > 0 else stem


_TYPE_SUFFIX = re.compile(
    r"([-._])(" + "|".join(sorted(map(re.escape, QUANT_TYPES), key=len, reverse=True))
    + r"|q4_1_some_f16)$",
    re.IGNORECASE,
)


def estimate_output_size(info: GGUFInfo, qtype: str | int | QuantType) -> int:
    """A generous estimate of the output file's size in bytes (for the free-space check)."""
    return int(expected_output_size(info, qtype) * 1.05) + (16 << 20)


def expected_output_size(info: GGUFInfo, qtype: str | int | QuantType) -> int:
    """The output file's size in bytes as llama.cpp's type rules make it, without a margin
    (within a few percent for the legacy types and the k-quant mixes)."""
    qtype = parse_quant_type(qtype)
    fallback_bits = qtype.fallback_bits_per_weight
    total = info.data_offset + 4096  # the header, plus the keys llama.cpp adds
    for tensor in info.tensors:
        if not _is_quantizable(tensor):
            total += tensor.n_bytes
            continue
        bits = qtype.bits_per_weight
        if not qtype.is_float and tensor.name in ("output.weight", "token_embd.weight"):
            bits = max(bits, 8.5)  # llama.cpp keeps these at Q6_K or Q8_0
        elif fallback_bits is not None and tensor.shape[0] % 256:
            bits = max(bits, fallback_bits)
        total += math.ceil(tensor.n_elements * bits / 8) + 32  # + alignment padding
    return total


def check_output_path(src: Path, dst: Path) -> None:
    """`dst` must be a file name in an existing directory, and not the input itself."""
    if dst.is_dir():
        raise QuantizeError(_("the output {path} is a directory; give a file name", path=dst))
    if not dst.parent.is_dir():
        raise QuantizeError(_("the output directory {directory} does not exist",
                              directory=dst.parent))
    same = src.resolve() == dst.resolve()
    if not same and dst.exists():
        with suppress(OSError):
            same = os.path.samefile(src, dst)
    if same:
        raise QuantizeError(
            _("the output {path} is the input file; choose another output name", path=dst)
        )


def check_disk_space(info: GGUFInfo, qtype: QuantType, dst: Path) -> None:
    """The directory of `dst` must have room for the estimated output."""
    needed = estimate_output_size(info, qtype)
    free = shutil.disk_usage(dst.parent).free
    if needed > free:
        raise QuantizeError(_(
            "not enough disk space in {directory}: the {qtype} file needs about {needed}, and "
            "only {free} is free", directory=dst.parent, qtype=qtype.label,
            needed=format_bytes(needed), free=format_bytes(free),
        ))


def _is_quantizable(tensor: TensorInfo) -> bool:
    """What llama.cpp converts: matrices named *weight, except norms (others are copied)."""
    return (len(tensor.shape) >= 2 and tensor.name.endswith("weight")
            and "_norm.weight" not in tensor.name)
