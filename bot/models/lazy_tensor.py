"""What a checkpoint reader returns for a tensor: a `LazyTensor`, its dtype, shape and where its
bytes are in the file, read a group of rows at a time.

Rows are mapped from the file only when `read_rows` asks for them, and unmapped when the caller
drops the array, so a reader never holds more than the rows being converted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.errors import ConversionError

# Element types by the codes safetensors uses; torch storages are translated to these codes.
NUMPY_DTYPES: dict[str, str] = {
    "F64": "f8",
    "F32": "f4",
    "F16": "f2",
    "BF16": "u2",  # numpy has no bfloat16: read the raw bits, widen to float32 in read_rows
    "I64": "i8",
    "I32": "i4",
    "I16": "i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


# Readers unpickle into these frozen classes; refusing BUILD keeps a pickle from rewriting them.
class TamperedPickle(Exception):
    """A pickle tried to change an object after building it (the BUILD opcode)."""


def refuse_setstate(self: object, state: object) -> None:
    raise TamperedPickle(type(self).__name__)


@dataclass(frozen=True, slots=True)
class FileRange:
    """A run of bytes inside a file, memory-mapped piece by piece on demand."""

    path: Path
    start: int
    length: int

    def map(self, offset: int, nbytes: int) -> NDArray[np.uint8]:
        """Map `nbytes` bytes at `offset` within this range, read-only."""
        if offset < 0 or offset + nbytes > self.length:
            raise ConversionError(
                f"{self.path} is truncated or corrupt: a tensor reaches past the end of its data"
            )
        if nbytes == 0:
            return np.empty(0, dtype=np.uint8)
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.start + offset,
                         shape=(nbytes,))


@dataclass(frozen=True, slots=True)
class LazyTensor:
    """A tensor in a checkpoint file, described but not yet read."""

    dtype: str
    shape: tuple[int, ...]
    data: FileRange
    offset: int  # byte offset of element 0 within `data`
    strides: tuple[int, ...]  # in elements, as torch stores them
    big_endian: bool = False

    # Pickle's BUILD opcode would otherwise rewrite the fields of a frozen slotted dataclass.
    __setstate__ = refuse_setstate

    @property
    def itemsize(self) -> int:
        return np.dtype(NUMPY_DTYPES[self.dtype]).itemsize

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize

    @property
    def n_rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_align(self) -> int:
        """Rows of a plain tensor can be read in any grouping."""
        return 1

    def is_contiguous(self) -> bool:
        return self.strides == contiguous_strides(self.shape)

    def read_rows(self, start: int, stop: int) -> NDArray[Any]:
        """Rows `start:stop` along the first dimension (bfloat16 is widened to float32)."""
        if not 0 <= start <= stop <= self.n_rows:
            raise ValueError(f"rows {start}:{stop} out of range for shape {self.shape}")
        dtype = np.dtype(NUMPY_DTYPES[self.dtype]).newbyteorder(">" if self.big_endian else "<")
        rest = self.shape[1:]
        if self.is_contiguous():
            row_bytes = math.prod(rest) * dtype.itemsize
            raw = self.data.map(self.offset + start * row_bytes, (stop - start) * row_bytes)
            rows = raw.view(dtype).reshape((stop - start, *rest) if self.shape else ())
        else:
            rows = self._read_strided(dtype)[start:stop]
        if self.dtype == "BF16":
            return (rows.astype(np.uint32) << 16).view(np.float32)
        return rows

    def load(self) -> NDArray[Any]:
        """The whole tensor (for small tensors and tests)."""
        return self.read_rows(0, self.n_rows)

    def _read_strided(self, dtype: np.dtype[Any]) -> NDArray[Any]:
        # Views saved with their base storage: map the span they cover and copy them out. The
        # copy is the whole shape: never more than the file holds (strides of 0 would let a
        # few bytes stand for any size).
        if self.nbytes > self.data.length:
            raise ConversionError(
                f"{self.data.path}: a tensor of shape {self.shape} would need {self.nbytes} "
                f"bytes from {self.data.length} stored"
            )
        span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides, strict=True))
        if any(n == 0 for n in self.shape):
            span = 0
        raw = self.data.map(self.offset, span * dtype.itemsize).view(dtype)
        byte_strides = tuple(s * dtype.itemsize for s in self.strides)
        view = np.lib.stride_tricks.as_strided(raw, self.shape, byte_strides, writeable=False)
        return np.ascontiguousarray(view)


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides, in elements, of a C-order tensor of this shape."""
    strides = []
    step = 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def is_count(value: object) -> bool:
    """A non-negative int (not a bool): what a size, offset or stride read from a file must be."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_count_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(is_count(v) for v in value)
