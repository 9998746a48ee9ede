"""Read a .safetensors file (Hugging Face weights) into `LazyTensor`s, checking its header,
without the safetensors package."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from bot.errors import ConversionError
from bot.models.lazy_tensor import (
    NUMPY_DTYPES,
    FileRange,
    LazyTensor,
    contiguous_strides,
    is_count,
    is_count_tuple,
)

_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def read_safetensors(path: Path) -> dict[str, LazyTensor]:
    """The tensors of a .safetensors file: an 8-byte header length, a JSON header, raw data."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ConversionError(f"{path} is not a safetensors file (too short)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > min(_MAX_SAFETENSORS_HEADER, size - 8):
                raise ConversionError(f"{path} is not a safetensors file (bad header length)")
            header = json.loads(f.read(header_len))
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not a safetensors file (bad header)") from exc
    if not isinstance(header, dict):
        raise ConversionError(f"{path} is not a safetensors file (bad header)")
    data_start = 8 + header_len
    data = FileRange(path, data_start, size - data_start)
    tensors: dict[str, LazyTensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConversionError(f"{path}: bad header entry for {name}") from exc
        if dtype not in NUMPY_DTYPES:
            raise ConversionError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        if not is_count_tuple(shape) or not (is_count(begin) and is_count(end)):
            raise ConversionError(f"{path}: bad header entry for {name}")
        tensor = LazyTensor(dtype=dtype, shape=shape, data=data, offset=begin,
                            strides=contiguous_strides(shape))
        if end - begin != tensor.nbytes or end > data.length:
            raise ConversionError(f"{path} is truncated or corrupt: tensor {name} does not fit")
        tensors[name] = tensor
    return tensors
