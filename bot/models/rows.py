"""Row sources: tensors read a group of rows at a time, so a converter never holds a whole one.

Besides the protocol, the adapters that merge model-parallel shards and un-permute Hugging Face
q/k rows on the fly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bot.errors import ConversionError


class RowSource(Protocol):
    """A tensor whose rows (first dimension) can be produced a group at a time."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def row_align(self) -> int:
        """Reads must start and stop at multiples of this many rows."""
        ...

    def read_rows(self, start: int, stop: int) -> NDArray[Any]: ...


class ConcatRows:
    """Shards of a matrix split along its output dimension (rows)."""

    def __init__(self, parts: Sequence[RowSource]) -> None:
        self._parts = list(parts)
        self.shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
        self.row_align = 1

    def read_rows(self, start: int, stop: int) -> NDArray[Any]:
        pieces = []
        offset = 0
        for part in self._parts:
            lo, hi = max(start - offset, 0), min(stop - offset, part.shape[0])
            if lo < hi:
                pieces.append(part.read_rows(lo, hi))
            offset += part.shape[0]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)


class ConcatColumns:
    """Shards of a matrix split along its input dimension (columns)."""

    def __init__(self, parts: Sequence[RowSource]) -> None:
        self._parts = list(parts)
        self.shape = (parts[0].shape[0], sum(p.shape[1] for p in parts))
        self.row_align = 1

    def read_rows(self, start: int, stop: int) -> NDArray[Any]:
        return np.concatenate([p.read_rows(start, stop) for p in self._parts], axis=1)


class HfUnpermute:
    """Undo Hugging Face's q/k row order (rotate-half) back to Meta's interleaved pairs.

    Within each head HF holds the first element of every rotary pair, then every second one;
    llama.cpp (like Meta) expects the pairs next to each other.
    """

    def __init__(self, source: RowSource, n_head: int, name: str) -> None:
        rows = source.shape[0]
        if len(source.shape) != 2 or rows % n_head or (rows // n_head) % 2:
            raise ConversionError(
                f"{name} has shape {source.shape}, which does not split into {n_head} heads"
            )
        self._source = source
        self._n_head = n_head
        self.shape = source.shape
        self.row_align = rows // n_head

    def read_rows(self, start: int, stop: int) -> NDArray[Any]:
        head_rows = self.row_align
        if start % head_rows or stop % head_rows:
            raise ValueError("HF q/k rows must be read in whole heads")
        rows = self._source.read_rows(start, stop)
        heads = (stop - start) // head_rows
        return (rows.reshape(heads, 2, head_rows // 2, *rows.shape[1:])
                .swapaxes(1, 2)
                .reshape(rows.shape))
